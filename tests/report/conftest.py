"""One curation run shared by the report, status, progress and browser tests (a pipeline run is
most of their time on 2 cores), and the report built from it once."""

from __future__ import annotations

import pytest

# The sample crawl through every non-detector stage: decode rejects, a size threshold (a threshold
# reject, applied early, right after decode), random-weight CLIP scores (histograms with data), phash
# duplicates, clusters and balanced sampling. detect, headpose and text are left out on purpose: their
# model costs dominate on 2 cores, and the report must say "not computed in this run" for their columns.
STAGES = "run.stages=[ingest,decode,embed,quality,filter,phash,cluster,sample,shard]"
THRESHOLD = "filters.min_height=700"
OVERRIDES = [STAGES, "embed.weights=random", "quality.weights=random", "filters.min_person_short_side=null",
             THRESHOLD, "ingest.shard_size=32", "shard.samples_per_shard=20"]


@pytest.fixture(scope="session")
def report_run(ray_local, sample_crawl, tmp_path_factory):
    """(run folder, the events on_event saw, the run's summary, its config, the report's HTML
    written when only ingest had run)."""
    from pathlib import Path

    from curation.report.build import build_report
    from curation.runner.pipeline import run_pipeline
    from curation.stages.dag import load_config

    crawl, _ = sample_crawl
    out = tmp_path_factory.mktemp("report-run") / "out"
    events: list[dict] = []
    cfg = load_config(None, OVERRIDES)
    # First `--stage ingest` alone, as after a crash: the report of an unfinished run is checked too,
    # and the full run below goes on from there without redoing ingest.
    run_pipeline(cfg, str(crawl), str(out), stage="ingest", on_event=events.append)
    partial = Path(build_report(str(out), str(out.parent / "partial-report"))).read_text()
    summary = run_pipeline(cfg, str(crawl), str(out), on_event=events.append)
    return out, events, summary, cfg, partial


@pytest.fixture(scope="session")
def report_html(report_run):
    from curation.report.build import build_report

    out = report_run[0]
    path = build_report(str(out))
    return out, path
