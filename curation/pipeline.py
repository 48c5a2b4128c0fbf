"""Build and run the curation DAG on Ray Data.

Entry point: `run_pipeline(cfg, input_uri, output_uri, stage=None, reconfigure=False)`.

The DAG is the registry's stages in order. Consecutive per-image (map) stages are fused into one
Ray Data job: load kept rows of each pending input shard -> map_batches per stage (actor pools
for stateful stages, tasks otherwise, resources from `ray_runtime.place`) -> write parts per
stage. The driver streams the writers' reports and writes a completion record for a shard as
soon as all its rows are in, so a crash loses only unfinished shards. Global stages see all kept
rows at once. `shard` writes the final tars.

A stage's fingerprint hashes its config sections and its predecessor's fingerprint: changing
`filters` re-runs `filter` and everything after it, never a model stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curation import __version__
from curation.config import Config, ConfigError
from curation.filters import parse_rules
from curation.io import fs
from curation.manifests.ledger import write_ledger
from curation.manifests.store import RunStore
from curation.models.weights import resolve
from curation.run_folder import check_upstream_complete, init_run_folder, load_plan
from curation.run_lock import run_lock
from curation.segment_io import load_task, write_task
from curation.stage_runner import StageRunner
from curation.stages.base import Stage
from curation.stages.registry import all_stages, get_stage, producer_of

log = logging.getLogger("curation")
Event = Callable[[dict[str, Any]], None]


@dataclass
class GlobalContext:
    config: Config
    store: RunStore
    cache_uri: str  # OUT/<stage>/cache: intermediates reusable across reruns
    input_fingerprint: str  # changes exactly when the rows/columns fed to the stage change
    seed: int
    num_cpus: float


def dag_names(cfg: Config) -> list[str]:
    return list(cfg.run.stages or all_stages())


def fingerprints(cfg: Config, names: list[str]) -> dict[str, str]:
    fps, prev = {}, __version__
    for name in names:
        stage = get_stage(name)(cfg)
        blob = json.dumps([name, cfg.section_hash(*stage.config_sections()), prev])
        prev = fps[name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return fps


def run_pipeline(cfg: Config, input_uri: str, output_uri: str, stage: str | None = None,
                 reconfigure: bool = False, on_event: Event | None = None) -> dict[str, Any]:
    from curation.ray_runtime import ray_session

    names = dag_names(cfg)
    selected = [stage] if stage else names
    if stage:
        get_stage(stage)
        if stage not in names:
            raise ConfigError(f"stage {stage!r} is not in run.stages ({', '.join(names)})")
    stages = [get_stage(n)(cfg) for n in selected]
    check_filters(cfg, names)
    # One error naming every missing weight file of the run, not one stage's at a time.
    resolve([w for s in stages if hasattr(s, "weight_files") for w in s.weight_files()])
    for s in stages:
        s.check()  # weights and config problems stop the run before any work
    store = RunStore(output_uri)
    with run_lock(store.out):  # one writer per OUT, taken before anything is written there
        init_run_folder(store, cfg, input_uri, stage, reconfigure)
        fps = fingerprints(cfg, names)
        emit = on_event or (lambda e: None)
        with ray_session(cfg.run.address, cfg.run.num_cpus, cfg.run.object_store_mb):
            i = 0
            while i < len(stages):
                s = stages[i]
                prev = names[names.index(s.name) - 1] if names.index(s.name) else None
                if s.kind == "read":
                    from curation.ingest_job import run_ingest

                    run_ingest(s, store, input_uri, fps[s.name], emit)
                    i += 1
                elif s.kind == "map":
                    j = i
                    while j < len(stages) and stages[j].kind == "map":
                        j += 1
                    run_map_segment(stages[i:j], prev, store, cfg, fps, emit)
                    i = j
                elif s.kind == "global":
                    run_global_stage(s, prev, store, cfg, fps, emit)
                    i += 1
                else:
                    check_upstream_complete(store, prev)
                    s.run_write(store, prev, fps[s.name], emit)
                    i += 1
        return write_ledger(store, names)


def check_filters(cfg: Config, names: list[str]) -> None:
    for rule in parse_rules(cfg.filters):
        producer = producer_of(rule.column)
        if producer is None or producer not in names:
            raise ConfigError(f"filters.{rule.key} reads {rule.column!r}, which no stage in this run produces "
                              f"(set filters.{rule.key}=null or add its stage)")


def early_rules(stage: Stage, cfg: Config) -> list:
    if not cfg.run.early_filter:
        return []
    return [r for r in parse_rules(cfg.filters) if r.column in stage.produces]


def _job_items(store: RunStore, shards: list[str], base: str, sources: dict[str, list[str]]) -> list[dict]:
    records = {name: store.done_records(name) for name in {base, *sources}}
    items = []
    for shard in shards:
        recs = {name: _strip(records[name][shard]) for name in records}
        items.append({"shard": shard, "records": json.dumps(recs)})
    return items


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("_root", "stage", "shard", "parts")}


def _sources(columns: list[str], before: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for col in dict.fromkeys(columns):
        producer = producer_of(col)
        if producer is None or producer not in before:
            raise ConfigError(f"column {col!r} is needed but no earlier stage produces it ({', '.join(before)})")
        out[producer].append(col)
    return dict(out)


def run_map_segment(stages: list[Stage], prev: str, store: RunStore, cfg: Config, fps: dict[str, str],
                    emit: Event) -> None:
    names = dag_names(cfg)
    check_upstream_complete(store, prev)
    plan = [s["shard"] for s in load_plan(store)]
    done = {s.name: store.done_records(s.name) for s in stages}
    by_start: dict[int, list[str]] = defaultdict(list)
    for shard in plan:
        for k, s in enumerate(stages):
            rec = done[s.name].get(shard)
            if rec is None or rec.get("fingerprint") != fps[s.name]:
                by_start[k].append(shard)
                break
    for k, shards in sorted(by_start.items()):
        base = prev if k == 0 else stages[k - 1].name
        run_map_job(stages[k:], base, shards, store, cfg, fps, emit, names)


def run_map_job(stages: list[Stage], base: str, shards: list[str], store: RunStore, cfg: Config,
                fps: dict[str, str], emit: Event, names: list[str]) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from curation.ray_runtime import place

    for shard in shards:
        for s in stages:
            store.clear_shard(s.name, shard)
    base_done = store.done_records(base)
    expected = {sh: base_done[sh]["kept"] for sh in shards}
    job_names = [s.name for s in stages]
    empty = [sh for sh in shards if expected[sh] == 0]
    for sh in empty:
        for s in stages:
            store.write_done(s.name, sh, _record(fps[s.name], 0, 0, {}, []))
    pending = [sh for sh in shards if expected[sh] > 0]
    if not pending:
        return
    produced_inside = {c for s in stages for c in s.produces}
    needed = [c for s in stages for c in s.required_columns() if c not in produced_inside]
    sources = _sources(needed, names[: names.index(stages[0].name)])
    items = _job_items(store, pending, base, sources)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(load_task, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
                        fn_kwargs={"base_stage": base, "columns_by_stage": sources})
    placement = place(stages)
    for s in stages:
        p, res = placement[s.name], s.effective_resources()
        args = (type(s), cfg, early_rules(s, cfg), p.threads)
        common = dict(batch_size=res.batch_size, batch_format="pyarrow", num_cpus=p.num_cpus)
        if p.num_gpus:
            common["num_gpus"] = p.num_gpus
        if s.stateful:
            ds = ds.map_batches(StageRunner, fn_constructor_args=args,
                                compute=ActorPoolStrategy(min_size=p.pool_min, max_size=p.pool_max), **common)
        else:
            ds = ds.map_batches(run_stage_task, fn_args=args, **common)
    ds = ds.map_batches(write_task, batch_size=None, batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs={"out": store.out, "stages": job_names,
                                   "produces": {s.name: list(s.produces) for s in stages}})
    _collect(ds, job_names, expected, store, fps, emit, all_at_end=False)


_RUNNERS: dict[tuple, StageRunner] = {}


def run_stage_task(batch: pa.Table, stage_cls: type, cfg: Config, rules: list, threads: int) -> pa.Table:
    """Task-mode stages: build the stage once per worker process, not once per batch."""
    key = (stage_cls.__name__, cfg.hash(), tuple(rules))
    if key not in _RUNNERS:
        _RUNNERS[key] = StageRunner(stage_cls, cfg, rules, threads)
    return _RUNNERS[key](batch)


def _record(fp: str, rows: int, kept: int, rejects: dict[str, int], parts: list[str], **extra) -> dict:
    return {"fingerprint": fp, "in": rows, "kept": kept, "rejects": dict(rejects), "parts": parts,
            "finished_at": time.time(), **extra}


def _collect(ds: Any, job_names: list[str], expected: dict[str, int], store: RunStore, fps: dict[str, str],
             emit: Event, all_at_end: bool) -> None:
    """Stream the writers' reports; a shard is done when its first stage has seen all its rows."""
    agg: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"rows": 0, "kept": 0, "rejects": Counter(),
                                                                      "parts": []})
    finished: set[str] = set()
    t0 = time.perf_counter()

    def finish(shard: str) -> None:
        for name in job_names:
            a = agg[(shard, name)]
            store.write_done(name, shard, _record(fps[name], a["rows"], a["kept"], a["rejects"], a["parts"]))
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

    names = dag_names(cfg)
    check_upstream_complete(store, prev)
    plan = [s["shard"] for s in load_plan(store)]
    done = store.done_records(stage.name)
    if all(done.get(sh, {}).get("fingerprint") == fps[stage.name] for sh in plan):
        return
    for sh in plan:
        store.clear_shard(stage.name, sh)
    base_done = store.done_records(prev)
    expected = {sh: base_done[sh]["kept"] for sh in plan}
    sources = _sources(list(stage.required_columns()), names[: names.index(stage.name)])
    items = _job_items(store, plan, prev, sources)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(load_task, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
                        fn_kwargs={"base_stage": prev, "columns_by_stage": sources})
    ctx = GlobalContext(config=cfg, store=store, cache_uri=store.uri(stage.name, "cache"),
                        input_fingerprint=fps[prev], seed=cfg.run.seed, num_cpus=ray.cluster_resources().get("CPU", 1))
    out = stage.run_global(ds, ctx)
    out = out.map_batches(write_task, batch_size=None, batch_format="pyarrow", num_cpus=0.25,
                          fn_kwargs={"out": store.out, "stages": [stage.name],
                                     "produces": {stage.name: list(stage.produces)}})
    _collect(out, [stage.name], expected, store, fps, emit, all_at_end=True)
