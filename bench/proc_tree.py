"""CPU seconds and runnable threads of a process tree, sampled in a thread (for benchmarks that run
Ray: its raylet, GCS and workers are children of the benchmark process)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class BackgroundSampler:
    """A sampling thread (`self._run`, stopped by `self.stop`) for the length of a `with` block."""

    def __init__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise TypeError(f"{type(self).__name__} defines no _run()")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class TreeCPU(BackgroundSampler):
    """CPU seconds of this process's descendants (Ray's raylet, GCS, workers), sampled every 0.25 s
    so that workers which exit before the end are still counted (up to one interval lost each)."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        super().__init__()
        self.loads: list[float] = []  # 1-minute load average, sampled every ~5 s
        # (wall s, threads of the run in state R): runnable = running or waiting for a core, so
        # min(R, cores) / cores is how well the pipeline keeps the cores fed, whatever other
        # people's jobs take of them (wall time cannot say that on a shared machine).
        self.runnable: list[tuple[float, int]] = []
        self.own = 0.0  # CPU s of this sampling thread, taken out of the run's CPU

    def _count_runnable(self, pids) -> int:
        me = threading.get_native_id()
        n = 0
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                if int(tid) == me:
                    continue
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                n += stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"R"
        return n

    def _run(self):
        tick = 0
        while not self.stop.is_set():
            c0 = time.thread_time()
            if tick % 20 == 0:
                self.loads.append(os.getloadavg()[0])
            tick += 1
            pids = [self.me.pid, *self.last]
            self.runnable.append((time.perf_counter(), self._count_runnable(pids)))
            for p in self.me.children(recursive=True):
                try:
                    t = p.cpu_times()
                    self.last[p.pid] = t.user + t.system
                    if not self.names.get(p.pid, "python").startswith(("ray::MapWorker", "raylet", "gcs")):
                        # Ray retitles a worker once it has a job: ray::IDLE, ray::MapWorker(...)
                        cmd = p.cmdline()
                        self.names[p.pid] = Path(cmd[0]).name[:48] if cmd else p.name()
                except Exception:  # noqa: BLE001, S112 - a process that just exited
                    continue
            self.own += time.thread_time() - c0
            self.stop.wait(0.25)

    @property
    def seconds(self) -> float:
        return sum(self.last.values())

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, t in self.last.items():
            out[self.names.get(pid, "?")] = out.get(self.names.get(pid, "?"), 0.0) + t
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))
