"""The job of consecutive per-image (map) stages: one Ray Data job per run of pending shards.

load kept rows of each pending input shard -> map_batches per unit (a fused chain of CPU stages
in one actor pool, a GPU stage in its own, stateless stages as tasks; resources from
`placement.place`) -> write every stage's part. A shard whose first stage is already done with
this fingerprint restarts at the first stage that is not.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from curation.config import Config
from curation.runner.fusion import FusedStageRunner, StageGroup, fusable_groups
from curation.runner.jobs import RunContext, collect, job_items, loaded_rows, shard_record, sources_of
from curation.runner.run_folder import check_upstream_complete, load_plan
from curation.runner.segments import write_task
from curation.runner.stage_runner import StageRunner
from curation.stages.base import Stage
from curation.stages.dag import early_rules


def run_map_segment(ctx: RunContext, stages: list[Stage]) -> None:
    prev = ctx.prev(stages[0].name)
    check_upstream_complete(ctx.store, prev)
    plan = [s["shard"] for s in load_plan(ctx.store)]
    done = {s.name: ctx.store.done_records(s.name) for s in stages}
    by_start: dict[int, list[str]] = defaultdict(list)
    for shard in plan:
        for k, s in enumerate(stages):
            rec = done[s.name].get(shard)
            if rec is None or rec.get("fingerprint") != ctx.fps[s.name]:
                by_start[k].append(shard)
                break
    for k, shards in sorted(by_start.items()):
        base = prev if k == 0 else stages[k - 1].name
        run_map_job(ctx, stages[k:], base, shards)


def run_map_job(ctx: RunContext, stages: list[Stage], base: str, shards: list[str]) -> None:
    from ray.data import ActorPoolStrategy

    from curation.runner.placement import actor_remote_args, cluster_totals, place

    store, cfg = ctx.store, ctx.config
    for shard in shards:
        for s in stages:
            store.clear_shard(s.name, shard)
    base_done = store.done_records(base)
    expected = {sh: base_done[sh]["kept"] for sh in shards}
    job_names = [s.name for s in stages]
    for sh in [sh for sh in shards if expected[sh] == 0]:  # nothing kept upstream: done, empty
        for s in stages:
            store.write_done(s.name, sh, shard_record(ctx.fps[s.name], 0, 0, {}, []))
    pending = [sh for sh in shards if expected[sh] > 0]
    if not pending:
        return
    produced_inside = {c for s in stages for c in s.produces}
    needed = [c for s in stages for c in s.required_columns() if c not in produced_inside]
    sources = sources_of(needed, ctx.before(stages[0].name))
    ds = loaded_rows(job_items(store, pending, base, sources), base, sources)
    units = fusable_groups(stages, cluster_totals()[1], cfg.run.fuse_cpu_stages)
    placement = place(units)
    for u in units:
        p, res = placement[u.name], u.effective_resources()
        common = {"batch_size": res.batch_size, "batch_format": "pyarrow", "num_cpus": p.num_cpus}
        if p.num_gpus:
            common["num_gpus"] = p.num_gpus
        in_flight = None if p.num_gpus else CPU_POOL_TASKS_IN_FLIGHT  # a GPU actor keeps a batch queued
        pool = {"compute": ActorPoolStrategy(min_size=p.pool_min, max_size=p.pool_max,
                                             max_tasks_in_flight_per_actor=in_flight),
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
    collect(ctx, ds, job_names, expected, all_at_end=False)


# A CPU actor is handed its next batch only when it has finished one. With Ray's default (2 in
# flight) the batches left when the input runs out sit in busy actors' queues while another actor
# idles: a chain batch is seconds to tens of seconds of one core, and the job ends up to a batch
# or two later than its work allows. Handing a batch over takes milliseconds.
CPU_POOL_TASKS_IN_FLIGHT = 1

_RUNNERS: dict[tuple, StageRunner] = {}


def cached_runner(stage_cls: type, cfg: Config, rules: list, threads: int) -> StageRunner:
    """A task-mode stage's runner, built once per worker process, not once per batch."""
    key = (stage_cls.__name__, cfg.hash(), tuple(rules))
    if key not in _RUNNERS:
        _RUNNERS[key] = StageRunner(stage_cls, cfg, rules, threads)
    return _RUNNERS[key]


def run_stage_task(batch: pa.Table, stage_cls: type, cfg: Config, rules: list, threads: int) -> pa.Table:
    return cached_runner(stage_cls, cfg, rules, threads)(batch)
