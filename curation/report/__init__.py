"""The HTML run report (`curate report OUT`): data loading, plots, galleries, page, build."""

from curation.report.build import build_report

__all__ = ["build_report"]
