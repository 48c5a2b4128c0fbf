"""Real processes for the reliability tests: a two-node Ray cluster started with `ray start`, and
`curate run` subprocesses. Everything started here runs in its own session and is killed by
session id, never with `ray stop` (which stops every Ray process of the user on the machine,
including other people's runs and the test session's own local Ray)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session (a `ray start --block` and all it spawned)."""
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
        except (psutil.Error, ProcessLookupError):
            pass


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **extra}


def curate(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], check=False, env=env(**(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


def run_args(crawl: str, out: str, sets: list[str]) -> list[str]:
    args = ["run", "-i", crawl, "-o", out]
    for s in sets:
        args += ["--set", s]
    return args


class TwoNodeCluster:
    """`ray start --head` (1 CPU) plus a second `ray start --address` (1 CPU, resource node2) on
    loopback. A private --temp-dir keeps its address file out of /tmp/ray, so no other
    `ray.init()` on this machine joins it by accident."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths are capped
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               f"--temp-dir={self.tmp}", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", *args]
        with open(os.path.join(self.tmp, f"start-{len(self.procs)}.log"), "w") as log:  # the child keeps its copy
            self.procs.append(subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def __enter__(self):
        try:
            self._start("--head", f"--port={self.port}", "--include-dashboard=false",
                        f"--dashboard-port={free_port()}")
            self._wait_nodes(1)
            self._start(f"--address={self.address}", '--resources={"node2": 1}')
            self._wait_nodes(2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_nodes(self, n: int, timeout: float = 180) -> None:
        """`ray start` prints this once its node is registered with the GCS (cheaper than probing
        with a driver, which takes a minute on a loaded 2-core machine)."""
        log = Path(self.tmp, f"start-{n - 1}.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[n - 1].poll() is not None:
                raise RuntimeError(f"ray start exited: {self.logs()}")
            if "Ray runtime started" in log.read_text():
                return
            time.sleep(0.5)
        raise TimeoutError(f"node {n} did not start in {timeout}s: {self.logs()}")

    def sessions(self) -> list[int]:
        return [p.pid for p in self.procs]

    def logs(self) -> str:
        return "\n".join(Path(self.tmp, f).read_text()[-1500:] for f in sorted(os.listdir(self.tmp))
                         if f.startswith("start-"))

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)  # ray start --block stops its node on SIGTERM
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_session(p.pid)  # whatever did not stop in time, by session id
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def busy_sessions(sessions: list[int]) -> set[int]:
    """Sessions (nodes) with a Ray worker executing a task right now (its title names the task)."""
    seen = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            title = (p.info["cmdline"] or [""])[0]
            if title.startswith("ray::") and not title.startswith(("ray::IDLE", "ray::Dashboard", "ray::RuntimeEnv")):
                sid = os.getsid(p.pid)
                if sid in sessions:
                    seen.add(sid)
        except (psutil.Error, ProcessLookupError):
            pass
    return seen
