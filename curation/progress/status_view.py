"""`curate status` and the end of `curate run`: the ledger as one compact rich table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from curation.progress.live import count, fmt_rate, fmt_rejects


def run_summary(run_dir: str) -> dict[str, Any]:
    """The ledger of a run folder, summed afresh from its completion records (what `--json` prints)."""
    from curation.report.data import open_run, run_stages
    from curation.runner.ledger import summarize

    store, config, _ = open_run(run_dir)
    return summarize(store, run_stages(config))


def status_table(summary: dict[str, Any], title: str | None = None) -> Table:
    inputs = summary["inputs"]
    table = Table(title=title or f"inputs {inputs} -> kept {summary['kept']}"
                  + ("" if summary.get("complete", True) else " (incomplete)"))
    for col in ("stage", "shards", "in", "kept", "kept %", "rejects", "img/s"):
        table.add_column(col, justify="right" if col in ("in", "kept", "kept %", "img/s") else "left")
    for name, s in summary["stages"].items():
        done = s["shards_done"] == s["shards_total"]
        shards = f"{s['shards_done']}/{s['shards_total']}"
        table.add_row(name, shards if done else f"[yellow]{shards}[/yellow]", str(s["in"]), str(s["kept"]),
                      f"{100.0 * s['kept'] / inputs:.1f}" if inputs else "-", fmt_rejects(s["rejects"]),
                      fmt_rate(s.get("rows_per_s")))
    if "shards" in summary:
        table.add_row("shard", "", str(summary["kept"]), str(summary["shards"]["samples"]), "", "-",
                      "-", end_section=True)
        table.caption = f"{count(summary['shards']['files'], 'tar')}, {count(summary['shards']['samples'], 'sample')}"
    if summary.get("complete", True) and not summary.get("balanced", True):
        table.caption = (table.caption or "") + "  [red]accounting does not balance[/red]"
    return table


def next_stage(summary: dict[str, Any]) -> str | None:
    """The first stage of the run with shards still to do (None: the run is complete)."""
    for name, s in summary["stages"].items():
        if s["shards_done"] < s["shards_total"]:
            return name
    return None
