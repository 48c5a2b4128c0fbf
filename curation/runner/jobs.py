"""What every job of the runner shares: the run's context, where each needed column comes from,
the loader of a job's rows, and the one driver loop that turns finished shards into completion
records and progress events (`ShardLedger`).

A completion record (OUT/<stage>/done/<shard>.json) is written for a shard as soon as all its
rows are in, so a crash loses only unfinished shards, and a rerun redoes exactly those.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.config import Config, ConfigError
from curation.io import fs
from curation.runner.segments import load_task
from curation.runner.store import RunStore
from curation.stages.dag import producer_of

Event = Callable[[dict[str, Any]], None]


@dataclass
class RunContext:
    """One `curate run`: its config, its output folder, the stages it runs and their fingerprints."""

    config: Config
    store: RunStore
    names: list[str]  # the run's stages, in DAG order
    fps: dict[str, str]  # stage -> fingerprint of its config and its predecessors'
    emit: Event  # progress events for the display

    def before(self, name: str) -> list[str]:
        return self.names[: self.names.index(name)]

    def prev(self, name: str) -> str | None:
        i = self.names.index(name)
        return self.names[i - 1] if i else None


def shard_record(fp: str, rows: int, kept: int, rejects: dict[str, int], parts: list[str], **extra) -> dict:
    return {"fingerprint": fp, "in": rows, "kept": kept, "rejects": dict(rejects), "parts": parts,
            "finished_at": time.time(), **extra}


class ShardLedger:
    """The driver loop of every job: announce it, write each finished shard's completion records
    and report progress, then record the job's timing for the ledger's throughput figures."""

    def __init__(self, ctx: RunContext, stages: list[str], total: int, rows: int | None, done: int = 0):
        """`done`: shards of this job finished by an earlier run (progress counts them as done)."""
        self.ctx, self.stages, self.total = ctx, stages, total
        self.done, self.rows, self.t0 = done, 0, time.perf_counter()
        # Lets a progress display show the job (and its totals, for an ETA) before its first shard ends.
        ctx.emit({"event": "job_start", "stages": stages, "total": total, "rows": rows})

    def finish(self, shard: str, records: dict[str, dict[str, Any]], rows: int,
               counts: dict[str, dict[str, Any]] | None = None) -> None:
        """Write `records` (stage -> completion record) for `shard`, then emit `shard_done`."""
        for name, rec in records.items():
            self.ctx.store.write_done(name, shard, rec)
        self.done += 1
        self.rows += rows
        if counts is None:
            counts = {n: {"in": r["in"], "kept": r["kept"], "rejects": r["rejects"]} for n, r in records.items()}
        self.ctx.emit({"event": "shard_done", "stages": self.stages, "shard": shard, "rows": rows,
                       "done": self.done, "total": self.total, "seconds": time.perf_counter() - self.t0,
                       "counts": counts})

    def close(self) -> None:
        seconds = round(time.perf_counter() - self.t0, 3)
        for name in self.stages:
            fs.write_json(self.ctx.store.uri(name, "timing.json"),
                          {"rows": self.rows, "seconds": seconds, "fused_with": self.stages})


def job_items(store: RunStore, shards: list[str], base: str, sources: dict[str, list[str]]) -> list[dict]:
    records = {name: store.done_records(name) for name in {base, *sources}}
    items = []
    for shard in shards:
        recs = {name: _strip(records[name][shard]) for name in records}
        items.append({"shard": shard, "records": json.dumps(recs)})
    return items


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("_root", "stage", "shard", "parts")}


def sources_of(columns: list[str], before: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for col in dict.fromkeys(columns):
        producer = producer_of(col)
        if producer is None or producer not in before:
            raise ConfigError(f"column {col!r} is needed but no earlier stage produces it ({', '.join(before)})")
        out[producer].append(col)
    return dict(out)


# max_calls=0 is Ray's own default for CPU tasks (a worker runs the function any number of
# times), stated explicitly: see loaded_rows.
LOAD_ARGS = {"num_cpus": 0.5, "max_calls": 0}


def loaded_rows(items: list[dict], base: str, sources: dict[str, list[str]]) -> Any:
    """A Ray Dataset of the job's rows: one load task per input shard (`items`).

    The load op must never be fused into the op after it. Ray Data fuses a task op into the next
    (task or actor) op whenever their remote args are equal, and the fused op then bundles
    *input items* up to the next op's batch size: a 32-row chain behind a fused loader got all
    18 shards of a job in one bundle, so one actor did the whole job while the other idled
    (measured: 1.01 of 2 cores used). Naming `max_calls` (at Ray's default, so nothing else
    changes) makes the loader's remote args differ from every stage op's, which never name it.
    """
    import ray

    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    return ds.map_batches(load_task, batch_size=1, batch_format="pyarrow", **LOAD_ARGS,
                          fn_kwargs={"base_stage": base, "columns_by_stage": sources})


def collect(ctx: RunContext, ds: Any, job_names: list[str], expected: dict[str, int], all_at_end: bool) -> None:
    """Stream the writers' reports (segments.write_task); a shard is done when its first stage has
    seen all its rows (`all_at_end`: only once the whole job is through, for global stages)."""
    agg: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"rows": 0, "kept": 0, "rejects": Counter(),
                                                                      "parts": []})
    ledger = ShardLedger(ctx, job_names, len(expected), sum(expected.values()))
    finished: set[str] = set()

    def finish(shard: str) -> None:
        finished.add(shard)
        recs = {name: shard_record(ctx.fps[name], a["rows"], a["kept"], a["rejects"], a["parts"])
                for name in job_names for a in [agg[(shard, name)]]}
        ledger.finish(shard, recs, expected[shard])

    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        touched = []
        for r in batch.to_pylist():  # one writer report covers every stage of its rows: add it all first
            add_report(agg[(r["shard"], r["stage"])], r)
            touched.append(r["shard"])
        for shard in dict.fromkeys(touched):
            if not all_at_end and shard not in finished and agg[(shard, job_names[0])]["rows"] == expected[shard]:
                finish(shard)
    for shard, n in expected.items():
        got = agg[(shard, job_names[0])]["rows"]
        if got != n:
            raise RuntimeError(f"{job_names[0]}: shard {shard} produced {got} rows for {n} inputs; not marked done")
        if shard not in finished:
            finish(shard)
    ledger.close()


def add_report(agg: dict[str, Any], report: dict[str, Any]) -> None:
    """Add one writer report (rows, kept, rejects as JSON, a part file) to a stage's running sums."""
    agg["rows"] += report["rows"]
    agg["kept"] += report["kept"]
    agg["rejects"].update(json.loads(report["rejects"]))
    if report["part"]:
        agg["parts"].append(report["part"])
