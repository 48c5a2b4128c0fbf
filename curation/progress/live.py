"""Progress for `curate run`: a live rich table on a terminal, quiet lines everywhere else.

Both displays consume the pipeline's `on_event` callback: `job_start` (stages of one Ray Data job,
its shard total) and `shard_done` (one input shard finished, with per-stage in/kept/rejects).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class StageCounts:
    rows_in: int = 0
    kept: int = 0
    rejects: Counter = field(default_factory=Counter)


@dataclass
class Job:
    """One Ray Data job: a single stage or several fused map stages that share shards."""

    stages: list[str]
    total: int = 0
    done: int = 0
    rows: int = 0
    seconds: float = 0.0
    counts: dict[str, StageCounts] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "+".join(self.stages)

    def rate(self) -> float | None:
        """Images per second through the job's first stage (what it was given)."""
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None

    def eta(self) -> float | None:
        # Shards are the unit of work; the average shard time so far predicts the rest.
        if not self.done or self.done >= self.total:
            return None
        return self.seconds / self.done * (self.total - self.done)


class RunProgress:
    """Folds pipeline events into per-job state; subclasses decide how to show it."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind not in ("job_start", "shard_done"):
            return
        job = self._job(event["stages"])
        job.total = event.get("total", job.total)
        if kind == "shard_done":
            job.done, job.seconds = event["done"], event.get("seconds", job.seconds)
            job.rows += event.get("rows") or 0
            for name, c in (event.get("counts") or {}).items():
                sc = job.counts.setdefault(name, StageCounts())
                sc.rows_in += c["in"]
                sc.kept += c["kept"]
                sc.rejects.update(c["rejects"])
        self.update(job, kind)

    def _job(self, stages: list[str]) -> Job:
        name = "+".join(stages)
        if name not in self.jobs:
            self.jobs[name] = Job(stages=list(stages))
        return self.jobs[name]

    def update(self, job: Job, kind: str) -> None:
        raise NotImplementedError


def fmt_rejects(rejects: Counter | dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(rejects.items())) or "-"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def count(n: int, noun: str) -> str:
    """`1 tar`, `16 tars`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}"


class LineProgress(RunProgress):
    """Logs and CI: at most one line per `every_s` seconds per job, and always the job's last shard."""

    def __init__(self, console: Console, every_s: float = 2.0):
        super().__init__()
        self.console = console
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def update(self, job: Job, kind: str) -> None:
        if kind != "shard_done":
            return
        now = time.monotonic()
        last = job.done >= job.total
        if not last and now - self._last.get(job.name, 0.0) < self.every_s:
            return
        self._last[job.name] = now
        line = (f"{job.name}: {job.done}/{job.total} shards, {job.rows} images, "
                f"{fmt_rate(job.rate())} img/s, {fmt_seconds(job.seconds)}")
        if not last:
            line += f", eta {fmt_seconds(job.eta())}"
        self.console.print(line, highlight=False, markup=False)
        if last:  # the per-stage outcome once, when the job is through
            for name, c in job.counts.items():
                self.console.print(f"  {name}: in {c.rows_in}, kept {c.kept}, rejects {fmt_rejects(c.rejects)}",
                                   highlight=False, markup=False)


class LiveProgress(RunProgress):
    """A terminal: one table row per stage, redrawn in place. Use as a context manager.

    Transient: when the run ends the live table gives way to the final status table."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveProgress:  # noqa: PYI034 - final class in practice
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.render())
        self.live.__exit__(*exc)

    def update(self, job: Job, kind: str) -> None:
        self.live.update(self.render())

    def render(self) -> Table:
        table = Table(title="curate run", expand=False)
        for col in ("stage", "shards", "in", "out", "rejects", "img/s", "eta"):
            table.add_column(col, justify="right" if col in ("in", "out", "img/s", "eta") else "left")
        for job in self.jobs.values():
            shards = f"{job.done}/{job.total}"
            for i, name in enumerate(job.stages):
                c = job.counts.get(name, StageCounts())
                first = i == 0  # fused stages share shards, rate and ETA: show them once
                table.add_row(name, shards if first else "", str(c.rows_in), str(c.kept), fmt_rejects(c.rejects),
                              fmt_rate(job.rate()) if first else "",
                              ("done" if job.done >= job.total and job.total else fmt_seconds(job.eta()))
                              if first else "")
        return table


def progress_for(console: Console) -> RunProgress:
    """Live on an interactive terminal, lines when output goes to a file, a pipe or a cluster log."""
    if console.is_terminal and sys.stdout.isatty():
        return LiveProgress(console)
    return LineProgress(console)
