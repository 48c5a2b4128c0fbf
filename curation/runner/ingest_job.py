"""Running `ingest`: one Ray task per pending input shard reads it, runs the CPU stages that
follow it (`decode`, and `filter` when it comes next), and writes every stage's part.

Fusing the followers into the read task means the image bytes are validated while they are still
in the task's memory: they are written once (the ingest part) and never read back for decode,
and the run has one Ray job where it had two, one after the other. Each task reads a whole shard,
so its row count is known when it returns and the completion records are exact. URL shards
download with a thread pool inside the task (I/O bound); with fractional CPUs per task, one
task's downloads overlap another's decoding.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.runner.jobs import RunContext, ShardLedger, add_report, shard_record
from curation.runner.run_folder import load_plan
from curation.runner.segments import write_task
from curation.runner.store import RunStore
from curation.schema import REJECT
from curation.stages.base import Stage
from curation.stages.dag import early_rules


def followers_of(stages: list[Stage], names: list[str]) -> list[Stage]:
    """The stages right after `ingest` in this run that its task can run too: stateless CPU map
    stages whose inputs ingest (or an earlier follower) produces."""
    if not stages or stages[0].kind != "read":
        return []
    available = set(stages[0].produces)
    out: list[Stage] = []
    for s in stages[1:]:
        res = s.effective_resources()
        if s.kind != "map" or s.stateful or res.num_gpus or not set(s.required_columns()) <= available:
            break
        if names.index(s.name) != names.index(stages[0].name) + 1 + len(out):
            break
        out.append(s)
        available |= set(s.produces)
    return out


def ingest_task(batch: Any, out: str, stage: Any, followers: list[tuple[type, Any, list]]) -> Any:
    store = RunStore(out)
    results = []
    for spec_json in batch.column("spec").to_pylist():
        spec = json.loads(spec_json)
        shard, t0 = spec["shard"], time.perf_counter()
        rows, nbytes, rejects = 0, 0, Counter()
        reports: dict[str, dict] = {}
        # Streamed chunk by chunk: the part file is written as the chunks come, the followers see
        # each chunk while its bytes are in memory, and the next chunk downloads meanwhile.
        with store.part_writer(stage.name, shard) as part:
            for chunk in stage.iter_chunks(spec, stage.params.chunk_rows):
                part.write(chunk)
                rows += chunk.num_rows
                nbytes += int(pc.sum(chunk.column("bytes")).as_py() or 0)
                rejects.update(r for r in chunk.column(REJECT).to_pylist() if r is not None)
                for r in _run_followers(chunk, shard, out, stage.config, followers) if followers else []:
                    new = {"rows": 0, "kept": 0, "rejects": Counter(), "parts": []}
                    add_report(reports.setdefault(r["stage"], new), r)
        found = _planned_items(spec)
        if found is not None and found != rows:  # an item without its row is a bug, not a reject
            raise RuntimeError(f"ingest of {shard}: {rows} rows for {found} items found")
        results.append({"shard": shard, "stage": stage.name, "part": json.dumps([part.name]), "rows": rows,
                        "kept": rows - sum(rejects.values()), "rejects": json.dumps(rejects), "bytes": nbytes,
                        "seconds": time.perf_counter() - t0})
        for name, a in reports.items():
            results.append({"shard": shard, "stage": name, "part": json.dumps(a["parts"]), "rows": a["rows"],
                            "kept": a["kept"], "rejects": json.dumps(a["rejects"]), "bytes": 0, "seconds": 0.0})
    return pa.Table.from_pylist(results)


def _run_followers(table: pa.Table, shard: str, out: str, config: Any,
                   followers: list[tuple[type, Any, list]]) -> list[dict]:
    from curation.runner.map_job import cached_runner

    kept = table.filter(pc.is_null(table.column(REJECT))).drop_columns([REJECT])
    rows = kept.select([c for c in kept.column_names if c not in ("reject_stage", "error")])
    for cls, _, rules in followers:
        rows = cached_runner(cls, config, rules, 1)(rows)  # built once per worker process
    names = [cls.name for cls, _, _ in followers]
    if rows.num_rows == 0:  # nothing kept: the followers saw no rows
        return [{"shard": shard, "stage": n, "part": "", "rows": 0, "kept": 0, "rejects": "{}"} for n in names]
    produces = {cls.name: list(cls.produces) for cls, _, _ in followers}
    return write_task(rows, out, names, produces).to_pylist()


def _ingest_one(spec_json: str, out: str, stage: Any, followers: list) -> pa.Table:
    return ingest_task(pa.table({"spec": [spec_json]}), out, stage, followers)


def _shard_tasks(pending: list[dict], out: str, stage: Any, followers: list) -> Iterator[pa.Table]:
    """One plain Ray task per shard, a bounded number in flight, reports in completion order.

    Plain tasks, not a Ray Data job: each shard is one independent task with nothing to stream
    between operators, and Ray Data's executor loop cost the driver more CPU than the whole of
    ingest's own bookkeeping (docs/benchmarks.md). Ray still places, retries (3 times, as for
    Ray Data tasks) and spreads them over a cluster."""
    import ray

    cpus = stage.effective_resources().num_cpus or 1.0
    remote = ray.remote(num_cpus=cpus, max_retries=3)(_ingest_one)
    stage_ref = ray.put(stage)
    limit = max(2, int(2 * ray.cluster_resources().get("CPU", 2) / cpus))
    queue, inflight = list(pending), []
    while queue or inflight:
        while queue and len(inflight) < limit:
            inflight.append(remote.remote(json.dumps(queue.pop(0)), out, stage_ref, followers))
        ready, inflight = ray.wait(inflight, num_returns=1)
        yield ray.get(ready[0])


def _planned_items(spec: dict[str, Any]) -> int | None:
    """Items the plan found in a shard (a tar's members are only counted as it is read)."""
    if spec["kind"] == "files":
        return len(spec.get("items") or spec.get("uris") or [])
    if spec["kind"] == "urls":
        return spec["stop"] - spec["start"]
    return None


def run_ingest(ctx: RunContext, stages: list[Stage], later: list[Stage]) -> None:
    """`stages` is [ingest]; the stages right after it that its tasks can run (followers_of) ride along."""
    (stage,), store = stages, ctx.store
    followers = followers_of([stage, *later], ctx.names)
    plan = load_plan(store)
    done = store.done_records(stage.name)
    pending = [s for s in plan if done.get(s["shard"], {}).get("fingerprint") != ctx.fps[stage.name]]
    if not pending:
        return
    names = [stage.name, *[f.name for f in followers]]
    for spec in pending:
        for name in names:
            store.clear_shard(name, spec["shard"])
    members = [(type(f), None, early_rules(f, ctx.config)) for f in followers]
    ledger = ShardLedger(ctx, names, len(pending), None)
    for batch in _shard_tasks(pending, store.out, stage, members):
        by_shard: dict[str, dict[str, dict]] = {}
        for r in batch.to_pylist():
            by_shard.setdefault(r["shard"], {})[r["stage"]] = r
        for shard, reports in by_shard.items():
            records = {}
            for name in names:
                r = reports.get(name) or {"rows": 0, "kept": 0, "rejects": "{}", "part": "[]"}
                extra = {"bytes": r["bytes"]} if name == stage.name else {}
                records[name] = shard_record(ctx.fps[name], r["rows"], r["kept"], json.loads(r["rejects"]),
                                             json.loads(r["part"]), **extra)
            ledger.finish(shard, records, reports[stage.name]["rows"])
    ledger.close()
