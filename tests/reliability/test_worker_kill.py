"""SIGKILL a Ray worker running a model stage (detect, random weights) mid-run: the run still
completes, no row is lost or doubled, and the kill does not turn rows into rejects.

What makes this survivable: Ray Data starts actor pools with max_restarts=-1 and
max_task_retries=-1 (ActorPoolMapOperator._apply_default_remote_args), and Ray tasks retry a
dead worker 3 times (max_retries default); the runner writes parts under fresh names and only
parts named in a completion record are ever read, so a batch redone after the kill counts once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .procs import env, kill_session, run_args
from .samples import read_samples

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

SETS = ["run.stages=[ingest,decode,detect,filter,shard]", "filters.min_person_short_side=null",
        "detect.weights=random", "detect.imgsz=320", "detect.batch_size=2", "ingest.shard_size=4",
        "decode.num_cpus=0.2", "run.num_cpus=2"]


def _actors(driver: psutil.Process) -> list[psutil.Process]:
    """The detect actors: Ray workers under this run whose process title names the StageRunner."""
    found = []
    try:
        children = driver.children(recursive=True)
    except psutil.Error:
        return []
    for p in children:
        try:
            if "StageRunner" in (p.cmdline() or [""])[0]:  # ray::MapWorker(MapBatches(StageRunner))...
                found.append(p)
        except psutil.Error:
            pass
    return found


def _title(p: psutil.Process) -> str:
    try:
        return (p.cmdline() or [""])[0]
    except psutil.Error:
        return ""


def test_killed_model_worker_is_replaced_and_nothing_is_lost(sample_crawl, tmp_path):
    crawl, info = sample_crawl
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", *run_args(str(crawl), str(out), SETS)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    driver = psutil.Process(proc.pid)
    shards = info["images"] // 4  # at ingest.shard_size=4
    victim = None
    replacements: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            actors = _actors(driver)
            # `.submit` in the title: the actor is executing batches, and most of detect's shards
            # are still to come (with decode run inside ingest's tasks, detect's first shard can
            # finish within a poll of its actor starting, so "none done yet" was a race)
            busy = [a for a in actors if _title(a).endswith(".submit")]
            if victim is None and busy and len(list((out / "detect").glob("done/*.json"))) < shards // 2:
                victim = busy[0].pid
                os.kill(victim, signal.SIGKILL)
            elif victim is not None:
                replacements |= {a.pid for a in actors if a.pid != victim}
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            kill_session(proc.pid)
    assert victim is not None, "the detect stage finished before a worker could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    assert replacements, "no detect actor ran after the kill"  # Ray restarted it, and it did the rest
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["complete"] and ledger["inputs"] == info["images"]
    assert not any(r.startswith("error:") for r in ledger["rejects"]), ledger["rejects"]
    assert ledger["stages"]["detect"]["in"] == ledger["stages"]["decode"]["kept"]  # every decoded row scored once
    samples = read_samples(str(out))  # asserts each key once
    assert len(samples) == ledger["kept"]
    print(f"killed detect actor {victim}; replacement actors seen: {sorted(replacements)}")
