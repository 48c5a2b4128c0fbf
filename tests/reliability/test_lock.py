"""Two runs pointed at the same OUT: the second is refused before it writes anything, naming the
holder; the first finishes intact; a killed holder never blocks the folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from run_helpers import base_overrides

from curation.manifests.manifest import verify_manifest
from curation.runner.lock import RunLocked, run_lock

from .procs import curate, env, run_args

pytestmark = pytest.mark.timeout(300)

HOLD = "import sys\nfrom curation.runner.lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    sys.stdin.read()\n"


def test_second_run_is_refused_and_first_completes(sample_crawl, tmp_path):
    crawl, info = sample_crawl
    out = tmp_path / "out"
    args = run_args(str(crawl), str(out), [*base_overrides(), "run.num_cpus=2"])
    first = subprocess.Popen([sys.executable, "-m", "curation.cli", *args], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the lock file exists and holds its holder's record (it is created, then written).
        # The loop ends at the deadline with an assertion, never by reading a file that is not there.
        deadline = time.monotonic() + 60
        while not ((out / ".lock").exists() and (out / ".lock").read_text()):
            assert first.poll() is None, "first run ended before it took the lock"
            assert time.monotonic() < deadline, "first run never took the lock within 60 s"
            time.sleep(0.05)
        second = curate(*args, timeout=120)
        assert first.poll() is None, "first run ended before the second was checked"
        assert second.returncode == 2
        assert f"is in use by another curate run (pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        _, stderr = first.communicate(timeout=240)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-2000:]
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["inputs"] == info["images"]
    assert verify_manifest(str(out / "shards" / "manifest.json")) == []


def test_refused_run_writes_nothing_and_a_killed_holder_frees_the_folder(sample_crawl, tmp_path):
    crawl, _ = sample_crawl
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = curate(*run_args(str(crawl), str(out), base_overrides()), timeout=120)
        assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr
        assert [p.name for p in out.iterdir()] == [".lock"]  # no config.yaml, run.json or plan
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"), run_lock(str(out)):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock with the process
        holder.wait(timeout=30)
    with run_lock(str(out)):
        assert json.loads((out / ".lock").read_text())["pid"] != holder.pid
