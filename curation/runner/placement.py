"""Starting or joining Ray, and turning stage resources into `map_batches` arguments.

The one rule that matters on small machines (ENV.md): actor pools must never hold every CPU, or
the read and write tasks starve and the streaming executor waits forever. Stateful stages of a
fused segment therefore share `total - 1` CPUs (fractional `num_cpus`), and a stage's torch
threads follow the CPUs it was given.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DRIVER_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1"),
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "1",
    # Ray Data's parquet reader starts this many footer-reading actors for every read_parquet
    # (default 32, ~100 MiB each): on 2 cores they were most of the process tree's memory at
    # 200k rows (19 alive at once) and their start-up most of the read's time. The runner's
    # only read_parquet is phash's hash cache, a few files (HASH_ROWS_PER_FILE).
    "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "2",
}


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None,
                worker_env: dict[str, str] | None = None, max_block_mb: int | None = None):
    """A local Ray (default) or a connection to a cluster; shut down only if we started it.

    `worker_env` goes to every worker as runtime_env env_vars (the job's own runtime_env from
    `ray job submit` is merged with it by Ray). A variable the driver already has keeps the
    driver's value, so a user's setting wins and never conflicts with the job's."""
    for k, v in DRIVER_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        yield ray
        return
    # Workers' stdout/stderr (third-party warnings such as PIL's "Corrupt EXIF data", Ray's own
    # worker lines) go to Ray's session logs, not the user's terminal; `curate --debug` shows them.
    log_to_driver = logging.getLogger().isEnabledFor(logging.INFO)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver,
                              "configure_logging": False}
    env = env_vars(worker_env)
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 2
        if object_store_mb:
            kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
    ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    # Ray Data logs a line per finished dataset at INFO; our own progress lines say more. Set
    # after ray.data is imported: its import configures logging and would reset the level.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if max_block_mb:
        ctx.target_max_block_size = max_block_mb * 1024 * 1024
    try:
        yield ray
    finally:
        ray.shutdown()


def env_vars(wanted: dict[str, str] | None) -> dict[str, str]:
    """`wanted`, except that a variable the driver's environment already has keeps its value."""
    return {k: os.environ.get(k, str(v)) for k, v in (wanted or {}).items()}


def actor_remote_args(actor_env: dict[str, str] | None) -> dict[str, Any]:
    """Ray remote args for a stage's actor pool: its env_vars, which Ray merges over the job's."""
    env = env_vars(actor_env)
    return {"runtime_env": {"env_vars": env}} if env else {}


LOADER_WRITER_OPS = 2  # the runner's load_task and write_task around every fused segment


@dataclass(frozen=True)
class Placement:
    num_cpus: float  # logical CPUs per actor (or task): a scheduling budget, not a thread count
    num_gpus: float
    threads: int  # intra-op threads the stage's model library gets
    pool_max: int  # actors in the pool (1 for task stages)
    pool_min: int = 1  # actors started up front


def cluster_totals() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def _cpu_pools(stages: list[Any], cpus: float) -> dict[str, int]:
    """Actors per CPU-bound stateful stage, in proportion to its per-image cost.

    Every actor of a fused segment works on a different batch at once, so the segment runs as
    fast as its slowest pool. A pool of one single-threaded actor per stage capped the DAG at
    its costliest stage (PP-OCRv4 `text`, ~60% of the per-image CPU on 2 cores: 0.82 of what
    the cores could do). A stage with share `c` of the cost needs `c * cpus` cores' worth of
    actors to keep pace; rounding up (less a little, so 2.05 stays 2) lets the costliest stage
    use every core while the cheap stages have nothing queued. Stages without a `cost` hint
    count as the mean of those with one (all equal when none has one).
    """
    known = [s.effective_resources().cost for s in stages if s.effective_resources().cost]
    default = sum(known) / len(known) if known else 1.0
    cost = {s.name: (s.effective_resources().cost or default) for s in stages}
    total = sum(cost.values()) or 1.0
    out = {}
    for s in stages:
        r = s.effective_resources()
        threads = max(1.0, r.num_cpus)  # a stage asking for 4 CPUs runs 4 threads per actor
        want = cpus * cost[s.name] / total / threads
        out[s.name] = max(1, min(r.concurrency or 10**6, math.ceil(want - 0.1)))
    return out


def place(stages: list[Any]) -> dict[str, Placement]:
    """Resources for each map stage of one fused segment, sized to the cluster.

    Actor pools hold their CPUs for the whole job, so together they get at most `total - 1`
    logical CPUs. How many actors each CPU stage gets follows its relative cost
    (`Resources.cost`, see `_cpu_pools`); the logical budget is then split over all actors, so a
    2-core machine runs 6 single-threaded actors at 1/6 CPU each (the OS shares the two cores
    among whichever have work). GPU stages are sized by their GPU fraction as before.

    What is left is shared by every task operator of the job: the runner's load and write tasks
    (LOADER_WRITER_OPS) and the task stages. A task stage asking for a whole CPU beside five
    actor pools on 2 cores left load and write nothing, and Ray Data waited forever: a task stage
    therefore asks for at most its share of the remainder (it still runs as fast as the cores
    allow; `num_cpus` is a scheduling budget, not a thread count).
    """
    cpus, gpus = cluster_totals()
    stateful = [s for s in stages if s.stateful]
    budget = max(cpus - 1.0, 0.1 * len(stateful))
    out: dict[str, Placement] = {}
    on_gpu = [s for s in stateful if s.uses_gpu and gpus > 0 and s.effective_resources().num_gpus > 0]
    for s in on_gpu:
        r = s.effective_resources()
        capacity = gpus / r.num_gpus
        pool = max(1, min(r.concurrency or 10**6, int(capacity) // max(1, len(stateful))))
        out[s.name] = Placement(num_cpus=min(r.num_cpus, 1.0), num_gpus=r.num_gpus,
                                threads=max(1, round(r.num_cpus)), pool_max=pool)
    on_cpu = [s for s in stateful if s not in on_gpu]
    if on_cpu:
        left = max(budget - sum(p.num_cpus * p.pool_max for p in out.values()), 0.1 * len(on_cpu))
        pools = _cpu_pools(on_cpu, cpus)
        threads = {s.name: max(1, round(s.effective_resources().num_cpus)) for s in on_cpu}
        per_thread = left / sum(pools[n] * threads[n] for n in pools)
        for s in on_cpu:
            num_cpus = min(s.effective_resources().num_cpus, per_thread * threads[s.name])
            # Whole pools up front: they are sized to the work, and an actor the autoscaler adds
            # later pays its model start-up in the middle of the job.
            out[s.name] = Placement(num_cpus=math.floor(num_cpus * 1e4) / 1e4, num_gpus=0.0, threads=threads[s.name],
                                    pool_max=pools[s.name], pool_min=pools[s.name])
    held = sum(p.num_cpus * p.pool_max for p in out.values())
    free = max(cpus - held, 0.5)
    tasks = [s for s in stages if not s.stateful]
    task_share = free / (len(tasks) + LOADER_WRITER_OPS) if stateful else max(0.25, cpus - 1.0)
    for s in tasks:
        r = s.effective_resources()
        num_cpus = max(0.05, min(r.num_cpus, task_share if cpus > 1 else 0.5))
        out[s.name] = Placement(num_cpus=round(num_cpus, 3), num_gpus=0.0, threads=1, pool_max=1)
    return {s.name: out[s.name] for s in stages}
