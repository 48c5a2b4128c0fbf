"""Starting or joining Ray, and turning stage resources into `map_batches` arguments.

The one rule that matters on small machines (ENV.md): actor pools must never hold every CPU, or
the read and write tasks starve and the streaming executor waits forever. Stateful stages of a
fused segment therefore share `total - 1` CPUs (fractional `num_cpus`), and a stage's torch
threads follow the CPUs it was given.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "YOLO_OFFLINE": os.environ.get("YOLO_OFFLINE", "1"),
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "1",
}


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None):
    """A local Ray (default) or a connection to a cluster; shut down only if we started it."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
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
    try:
        yield ray
    finally:
        ray.shutdown()


LOADER_WRITER_OPS = 2  # the runner's load_task and write_task around every fused segment


@dataclass(frozen=True)
class Placement:
    num_cpus: float
    num_gpus: float
    threads: int
    pool_max: int


def cluster_totals() -> tuple[float, float]:
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def place(stages: list[Any]) -> dict[str, Placement]:
    """Resources for each map stage of one fused segment, sized to the cluster.

    Actor pools hold their CPUs for the whole job, so together they get at most `total - 1`.
    What is left is shared by every task operator of the job: the runner's load and write tasks
    (LOADER_WRITER_OPS) and the task stages. A task stage asking for a whole CPU beside five
    actor pools on 2 cores left load and write nothing, and Ray Data waited forever: a task stage
    therefore asks for at most its share of the remainder (it still runs as fast as the cores
    allow; `num_cpus` is a scheduling budget, not a thread count).
    """
    cpus, gpus = cluster_totals()
    stateful = [s for s in stages if s.stateful]
    share = max(0.1, (cpus - 1.0) / max(1, len(stateful)))
    out: dict[str, Placement] = {}
    for s in stateful:
        r = s.effective_resources()
        want_gpu = r.num_gpus if (s.uses_gpu and gpus > 0) else 0.0
        num_cpus = min(r.num_cpus, share) if want_gpu == 0 else min(r.num_cpus, 1.0)
        per_actor = want_gpu if want_gpu > 0 else num_cpus
        capacity = (gpus / per_actor) if want_gpu > 0 else max(1.0, (cpus - 1.0) / max(per_actor, 1e-6))
        pool_max = max(1, min(r.concurrency or 10**6, int(capacity) // max(1, len(stateful))))
        threads = max(1, int(round(r.num_cpus if want_gpu else max(num_cpus, 1.0))))
        out[s.name] = Placement(num_cpus=num_cpus, num_gpus=want_gpu, threads=threads, pool_max=pool_max)
    held = sum(p.num_cpus * p.pool_max for p in out.values())
    free = max(cpus - held, 0.5)
    tasks = [s for s in stages if not s.stateful]
    task_share = free / (len(tasks) + LOADER_WRITER_OPS) if stateful else max(0.25, cpus - 1.0)
    for s in tasks:
        r = s.effective_resources()
        num_cpus = max(0.05, min(r.num_cpus, task_share if cpus > 1 else 0.5))
        out[s.name] = Placement(num_cpus=round(num_cpus, 3), num_gpus=0.0, threads=1, pool_max=1)
    return {s.name: out[s.name] for s in stages}
