"""What the runner's Ray Data jobs share: the per-shard work items, where each needed column
comes from, and the driver loop that turns the writers' reports into completion records. Also
the job of a global stage (all kept rows at once, written per input shard at the end).
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
from curation.runner.store import RunStore
from curation.runner.run_folder import check_upstream_complete, load_plan
from curation.runner.segments import load_task, write_task
from curation.stages.base import Stage
from curation.stages.registry import all_stages, producer_of

Event = Callable[[dict[str, Any]], None]


@dataclass
class GlobalContext:
    config: Config
    store: RunStore
    cache_uri: str  # OUT/<stage>/cache: intermediates reusable across reruns
    input_fingerprint: str  # changes exactly when the rows/columns fed to the stage change
    seed: int
    num_cpus: float


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


def shard_record(fp: str, rows: int, kept: int, rejects: dict[str, int], parts: list[str], **extra) -> dict:
    return {"fingerprint": fp, "in": rows, "kept": kept, "rejects": dict(rejects), "parts": parts,
            "finished_at": time.time(), **extra}


def collect(ds: Any, job_names: list[str], expected: dict[str, int], store: RunStore, fps: dict[str, str],
             emit: Event, all_at_end: bool) -> None:
    """Stream the writers' reports; a shard is done when its first stage has seen all its rows."""
    agg: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"rows": 0, "kept": 0, "rejects": Counter(),
                                                                      "parts": []})
    finished: set[str] = set()
    t0 = time.perf_counter()

    def finish(shard: str) -> None:
        for name in job_names:
            a = agg[(shard, name)]
            store.write_done(name, shard, shard_record(fps[name], a["rows"], a["kept"], a["rejects"], a["parts"]))
        finished.add(shard)
        counts = {name: {"in": agg[(shard, name)]["rows"], "kept": agg[(shard, name)]["kept"],
                         "rejects": dict(agg[(shard, name)]["rejects"])} for name in job_names}
        emit({"event": "shard_done", "stages": job_names, "shard": shard, "rows": expected[shard],
              "done": len(finished), "total": len(expected), "seconds": time.perf_counter() - t0,
              "counts": counts})

    # Lets a progress display show the job (and its totals, for an ETA) before its first shard ends.
    emit({"event": "job_start", "stages": job_names, "total": len(expected), "rows": sum(expected.values())})

    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        touched = []
        for r in batch.to_pylist():  # one writer report covers every stage of its rows: add it all first
            a = agg[(r["shard"], r["stage"])]
            a["rows"] += r["rows"]
            a["kept"] += r["kept"]
            a["rejects"].update(json.loads(r["rejects"]))
            if r["part"]:
                a["parts"].append(r["part"])
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
    _write_timing(store, job_names, sum(expected.values()), time.perf_counter() - t0)


def _write_timing(store: RunStore, names: list[str], rows: int, seconds: float) -> None:
    for name in names:
        fs.write_json(store.uri(name, "timing.json"), {"rows": rows, "seconds": round(seconds, 3),
                                                       "fused_with": names})


def run_global_stage(stage: Stage, prev: str, store: RunStore, cfg: Config, fps: dict[str, str],
                     emit: Event) -> None:
    import ray

    names = list(cfg.run.stages or all_stages())
    check_upstream_complete(store, prev)
    plan = [s["shard"] for s in load_plan(store)]
    done = store.done_records(stage.name)
    if all(done.get(sh, {}).get("fingerprint") == fps[stage.name] for sh in plan):
        return
    for sh in plan:
        store.clear_shard(stage.name, sh)
    base_done = store.done_records(prev)
    expected = {sh: base_done[sh]["kept"] for sh in plan}
    sources = sources_of(list(stage.required_columns()), names[: names.index(stage.name)])
    items = job_items(store, plan, prev, sources)
    ds = loaded_rows(items, prev, sources)
    ctx = GlobalContext(config=cfg, store=store, cache_uri=store.uri(stage.name, "cache"),
                        input_fingerprint=fps[prev], seed=cfg.run.seed, num_cpus=ray.cluster_resources().get("CPU", 1))
    out = stage.run_global(ds, ctx)
    out = out.map_batches(write_task, batch_size=None, batch_format="pyarrow", num_cpus=0.25,
                          fn_kwargs={"out": store.out, "stages": [stage.name],
                                     "produces": {stage.name: list(stage.produces)}})
    collect(out, [stage.name], expected, store, fps, emit, all_at_end=True)
