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

from curation.models.costs import GpuActorCost, gpu_actor_costs

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


def _cpu_costs(stages: list[Any]) -> dict[str, float]:
    """CPU seconds per image of each CPU unit (`Resources.cost`; a chain's is its members' sum).
    Stages without a cost hint count as the mean of those with one (all equal when none has one)."""
    known = [s.effective_resources().cost for s in stages if s.effective_resources().cost]
    default = sum(known) / len(known) if known else 1.0
    return {s.name: s.effective_resources().cost or default for s in stages}


def _gpu_costs(stages: list[Any], cpu_costs: dict[str, float]) -> dict[str, GpuActorCost]:
    """Per-image time of one actor of each GPU stage (curation/models/costs.py); a stage the table
    does not know counts its whole CPU cost as host time (an upper bound: its networks included)."""
    table = gpu_actor_costs()
    return {s.name: table.get(s.name) or GpuActorCost(host_s=cpu_costs[s.name]) for s in stages}


def _rate(on_gpu: list[Any], gpu_cost: dict[str, GpuActorCost], cpu_cost: dict[str, float], cpus: float,
          gpus: float, cpu_room: float) -> tuple[float, dict[str, int]]:
    """The images/s every pool of the segment is sized to pass, and the GPU pools at that rate.

    A pool passes (actors x threads / seconds per image of one actor) images/s, so pools that pass
    the same rate T are in proportion to their actors' time per image. T is the largest rate that
    the cores carry (the CPU stages' cost and the GPU actors' host time together), and at which the
    GPU pools, rounded up to whole actors so that each passes at least T, fit the GPUs by their
    `num_gpus` and the CPUs left to actors by their `num_cpus`. (Rounding down would leave a pool
    that needs 1.9 actors with one, and the whole segment at half the rate.)
    """
    host = sum(cpu_cost.values()) + sum(c.host_s for c in gpu_cost.values())
    t_max = cpus / host if host else 1e9

    def pools(t: float) -> dict[str, int]:
        return {s.name: max(1, min(s.effective_resources().concurrency or 10**6,
                                   math.ceil(t * gpu_cost[s.name].seconds - 1e-9))) for s in on_gpu}

    def fits(n: dict[str, int]) -> bool:
        rs = {s.name: s.effective_resources() for s in on_gpu}
        return (sum(n[k] * r.num_gpus for k, r in rs.items()) <= gpus + 1e-9
                and sum(n[k] * min(r.num_cpus, 1.0) for k, r in rs.items()) <= cpu_room + 1e-9)

    if not on_gpu or fits(pools(t_max)):
        return t_max, pools(t_max)
    lo, hi = 0.0, t_max  # pools(t) only grow with t: the largest t that fits, by bisection
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(pools(mid)) else (lo, mid)
    return lo, pools(lo)


def place(stages: list[Any]) -> dict[str, Placement]:
    """Resources for each map stage of one fused segment, sized to the cluster.

    Every pool is sized to pass the same images/s (`_rate`): a CPU pool gets actors in
    proportion to its cost (`Resources.cost`), rounded up (less a little, so 2.05 stays 2) so the
    costliest stage can use every core while the cheap ones have nothing queued; a GPU pool gets
    actors in proportion to one actor's time per image (curation/models/costs.py), as many as
    the GPUs hold. A CPU-only segment thus spreads the cores by cost share, as before;
    beside GPU pools a cheap CPU stage (`quality`, ~1 ms an image) gets the few actors the GPU
    stages' rate needs, not the node's cores.

    Actor pools hold their CPUs for the whole job, so together they get at most `total - 1`
    logical CPUs: the CPU pools share what the GPU actors leave, split over all their actors, so
    a 2-core machine runs one chain of every stage in 2 actors at 1/2 CPU each (the OS shares the
    two cores among whichever have work).

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
    on_cpu = [s for s in stateful if s not in on_gpu]
    threads = {s.name: max(1, round(s.effective_resources().num_cpus)) for s in stateful}
    cpu_cost = _cpu_costs(on_cpu)
    rate, gpu_pools = _rate(on_gpu, _gpu_costs(on_gpu, _cpu_costs(stateful)), cpu_cost, cpus, gpus,
                            budget - 0.1 * len(on_cpu))
    for s in on_gpu:
        r = s.effective_resources()
        out[s.name] = Placement(num_cpus=min(r.num_cpus, 1.0), num_gpus=r.num_gpus, threads=threads[s.name],
                                pool_max=gpu_pools[s.name])
    if on_cpu:
        left = max(budget - sum(p.num_cpus * p.pool_max for p in out.values()), 0.1 * len(on_cpu))
        # A stage asking for 4 CPUs runs 4 threads per actor: a quarter of the actors.
        want = {s.name: rate * cpu_cost[s.name] / threads[s.name] for s in on_cpu}
        pools = {s.name: max(1, min(s.effective_resources().concurrency or 10**6, math.ceil(want[s.name] - 0.1)))
                 for s in on_cpu}
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
