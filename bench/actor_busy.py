"""When each chain actor of a Ray Data job last did work (bench_model_stages.py's tail figure)."""

from __future__ import annotations

import time

from proc_tree import BackgroundSampler, TreeCPU


class ActorBusy(BackgroundSampler):
    """When each chain actor last did work: its CPU seconds sampled every 0.5 s (the tree sampler's
    pids and names). At the end of a job the actors that ran out of batches wait for the last one;
    `idle_core_s(end)` adds up those waits, the job's tail."""

    def __init__(self, tree: TreeCPU):
        super().__init__()
        self.tree, self.series = tree, {}

    def _run(self) -> None:
        import psutil

        while not self.stop.wait(0.5):
            now = time.perf_counter()
            for pid, name in list(self.tree.names.items()):
                if name.startswith("ray::MapWorker"):
                    try:
                        t = psutil.Process(pid).cpu_times()
                    except psutil.Error:
                        continue
                    self.series.setdefault(pid, []).append((now, t.user + t.system))

    def last_busy(self) -> list[float]:
        """Per actor, the end of the last 0.5 s interval in which it used at least a quarter of its
        median share of a core (relative, so a machine loaded by other people's jobs, where a busy
        actor gets a fraction of a core, still tells busy from idle)."""
        import itertools
        import statistics

        out = []
        for samples in self.series.values():
            steps = [(t1, (c1 - c0) / (t1 - t0)) for (t0, c0), (t1, c1) in itertools.pairwise(samples)]
            if not steps:
                continue
            floor = max(0.02, statistics.median(r for _, r in steps) / 4)
            busy = [t for t, r in steps if r >= floor]
            if busy:
                out.append(busy[-1])
        return out

    def idle_core_s(self, end: float) -> float:
        return sum(max(0.0, end - t) for t in self.last_busy())
