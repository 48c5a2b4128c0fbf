"""Run the stage DAG (stages/dag.py) on Ray: `run_pipeline(cfg, input_uri, output_uri, stage=None)`.

Each stage kind has one job (the JOBS table). Consecutive map stages form one job; every other
kind runs one stage per job. Every job drives its shards through the same loop
(jobs.ShardLedger): a completion record per shard as soon as it is done, so a crash loses only
unfinished shards and a rerun skips every shard whose record carries the current fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curation.config import Config, ConfigError
from curation.models.costs import gpu_actor_costs
from curation.models.weights import resolve
from curation.runner.global_job import run_global_stage
from curation.runner.ingest_job import run_ingest
from curation.runner.jobs import Event, RunContext
from curation.runner.ledger import write_ledger
from curation.runner.lock import run_lock
from curation.runner.map_job import run_map_segment
from curation.runner.run_folder import init_run_folder
from curation.runner.shard_job import run_shard
from curation.runner.store import RunStore
from curation.stages.base import Stage
from curation.stages.dag import check_filters, fingerprints, get_stage, run_stages

# job(ctx, the job's stages, the stages after them). `ingest` runs the CPU stages right after it
# (decode, and filter when it is next) inside its own tasks; the map job after it then finds
# those shards done and redoes only what is not.
JOBS: dict[str, Callable[[RunContext, list[Stage], list[Stage]], None]] = {
    "read": run_ingest,
    "map": lambda ctx, group, later: run_map_segment(ctx, group),
    "global": lambda ctx, group, later: run_global_stage(ctx, group),
    "write": lambda ctx, group, later: run_shard(ctx, group),
}


def run_pipeline(cfg: Config, input_uri: str, output_uri: str, stage: str | None = None,
                 reconfigure: bool = False, on_event: Event | None = None) -> dict[str, Any]:
    from curation.runner.placement import ray_session

    names = run_stages(cfg)
    if stage:
        get_stage(stage)
        if stage not in names:
            raise ConfigError(f"stage {stage!r} is not in run.stages ({', '.join(names)})")
    stages = [get_stage(n)(cfg) for n in ([stage] if stage else names)]
    check_filters(cfg, names)
    gpu_actor_costs()  # a bad $CURATE_STAGE_COSTS file stops the run here, not in the map job
    # One error naming every missing weight file of the stages run now, not one stage's at a time.
    resolve([w for s in stages for w in getattr(s, "weight_files", list)()])
    for s in stages:
        s.check()  # weights and config problems stop the run before any work
    store = RunStore(output_uri)
    with run_lock(store.out):  # one writer per OUT, taken before anything is written there
        init_run_folder(store, cfg, input_uri, stage, reconfigure)
        ctx = RunContext(cfg, store, names, fingerprints(cfg, names), on_event or (lambda e: None))
        r = cfg.run
        with ray_session(r.address, r.num_cpus, r.object_store_mb, r.worker_env, r.max_block_mb):
            for group, later in job_groups(stages):
                JOBS[group[0].kind](ctx, group, later)
        return write_ledger(store, names)


def job_groups(stages: list[Stage]) -> list[tuple[list[Stage], list[Stage]]]:
    """(stages of one job, the stages after it): a run of consecutive map stages is one job."""
    out, i = [], 0
    while i < len(stages):
        j = i + 1
        while stages[i].kind == "map" and j < len(stages) and stages[j].kind == "map":
            j += 1
        out.append((stages[i:j], stages[j:]))
        i = j
    return out
