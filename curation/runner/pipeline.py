"""Build and run the curation DAG on Ray Data.

Entry point: `run_pipeline(cfg, input_uri, output_uri, stage=None, reconfigure=False)`.

The DAG is the registry's stages in order. Consecutive per-image (map) stages are fused into one
Ray Data job: load kept rows of each pending input shard -> map_batches per stage (actor pools
for stateful stages, tasks otherwise, resources from `ray_runtime.place`) -> write parts per
stage. The driver streams the writers' reports and writes a completion record for a shard as
soon as all its rows are in, so a crash loses only unfinished shards. Global stages see all kept
rows at once (curation/runner/jobs.py, with the driver loop both kinds of job share). `shard`
writes the final tars.

A stage's fingerprint hashes its config sections and its predecessor's fingerprint: changing
`filters` re-runs `filter` and everything after it, never a model stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from curation import __version__
from curation.config import Config, ConfigError
from curation.stages.filters import parse_rules
from curation.runner.ledger import write_ledger
from curation.runner.store import RunStore
from curation.models.weights import resolve
from curation.runner.run_folder import check_upstream_complete, init_run_folder, load_plan
from curation.runner.lock import run_lock
from curation.runner.segments import write_task
from curation.runner.fusion import FusedStageRunner, StageGroup, fusable_groups
from curation.runner.jobs import (
    GlobalContext,
    collect,
    job_items,
    loaded_rows,
    run_global_stage,
    shard_record,
    sources_of,
)
from curation.runner.stage_runner import StageRunner
from curation.stages.base import Stage
from curation.stages.registry import all_stages, get_stage, producer_of

log = logging.getLogger("curation")
Event = Callable[[dict[str, Any]], None]
__all__ = ["GlobalContext", "run_pipeline"]


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
    from curation.runner.placement import ray_session

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
        with ray_session(cfg.run.address, cfg.run.num_cpus, cfg.run.object_store_mb, cfg.run.worker_env,
                         cfg.run.max_block_mb):
            i = 0
            while i < len(stages):
                s = stages[i]
                prev = names[names.index(s.name) - 1] if names.index(s.name) else None
                if s.kind == "read":
                    from curation.runner.ingest_job import followers_of, run_ingest

                    # decode (and filter, when it is next) run inside ingest's tasks; the map
                    # segments below then find those shards done and redo only what is not.
                    run_ingest(s, store, fps, emit, followers_of(stages[i:], names),
                               lambda f: early_rules(f, cfg))
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
    from ray.data import ActorPoolStrategy

    from curation.runner.placement import actor_remote_args, cluster_totals, place

    for shard in shards:
        for s in stages:
            store.clear_shard(s.name, shard)
    base_done = store.done_records(base)
    expected = {sh: base_done[sh]["kept"] for sh in shards}
    job_names = [s.name for s in stages]
    empty = [sh for sh in shards if expected[sh] == 0]
    for sh in empty:
        for s in stages:
            store.write_done(s.name, sh, shard_record(fps[s.name], 0, 0, {}, []))
    pending = [sh for sh in shards if expected[sh] > 0]
    if not pending:
        return
    produced_inside = {c for s in stages for c in s.produces}
    needed = [c for s in stages for c in s.required_columns() if c not in produced_inside]
    sources = sources_of(needed, names[: names.index(stages[0].name)])
    items = job_items(store, pending, base, sources)
    ds = loaded_rows(items, base, sources)
    units = fusable_groups(stages, cluster_totals()[1], cfg.run.fuse_cpu_stages)
    placement = place(units)
    for u in units:
        p, res = placement[u.name], u.effective_resources()
        common = {"batch_size": res.batch_size, "batch_format": "pyarrow", "num_cpus": p.num_cpus}
        if p.num_gpus:
            common["num_gpus"] = p.num_gpus
        pool = {"compute": ActorPoolStrategy(min_size=p.pool_min, max_size=p.pool_max),
                **actor_remote_args(cfg.run.actor_env)}
        if isinstance(u, StageGroup):
            members = [(type(s), early_rules(s, cfg), s.effective_resources().batch_size) for s in u.stages]
            ds = ds.map_batches(FusedStageRunner, fn_constructor_args=(members, cfg, p.threads), **pool, **common)
        elif u.stateful:
            args = (type(u), cfg, early_rules(u, cfg), p.threads)
            ds = ds.map_batches(StageRunner, fn_constructor_args=args, **pool, **common)
        else:
            ds = ds.map_batches(run_stage_task, fn_args=(type(u), cfg, early_rules(u, cfg), p.threads), **common)
    ds = ds.map_batches(write_task, batch_size=None, batch_format="pyarrow", num_cpus=0.25,
                        fn_kwargs={"out": store.out, "stages": job_names,
                                   "produces": {s.name: list(s.produces) for s in stages}})
    collect(ds, job_names, expected, store, fps, emit, all_at_end=False)


_RUNNERS: dict[tuple, StageRunner] = {}


def run_stage_task(batch: pa.Table, stage_cls: type, cfg: Config, rules: list, threads: int) -> pa.Table:
    """Task-mode stages: build the stage once per worker process, not once per batch."""
    key = (stage_cls.__name__, cfg.hash(), tuple(rules))
    if key not in _RUNNERS:
        _RUNNERS[key] = StageRunner(stage_cls, cfg, rules, threads)
    return _RUNNERS[key](batch)
