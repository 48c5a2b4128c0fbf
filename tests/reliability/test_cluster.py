"""`curate run --address` on a real two-node Ray cluster gives the same shards as a local run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from run_helpers import base_overrides

from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config

from .procs import TwoNodeCluster, busy_sessions, env, run_args
from .samples import read_samples

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]


def test_two_node_cluster_run_equals_local_run(ray_local, sample_crawl, tmp_path):
    crawl, info = sample_crawl
    sets = base_overrides("ingest.shard_size=8", "shard.samples_per_shard=30")
    local = tmp_path / "local"
    run_pipeline(load_config(None, sets), str(crawl), str(local))  # the reference: the session's local Ray

    remote = tmp_path / "cluster"
    with TwoNodeCluster() as cluster:
        cmd = [sys.executable, "-m", "curation.cli", *run_args(str(crawl), str(remote), sets),
               "--address", cluster.address]
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        busy: set[int] = set()
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:  # which nodes run tasks
            busy |= busy_sessions(cluster.sessions())
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr[-3000:] + cluster.logs()
    assert busy == set(cluster.sessions()), "both nodes should have run tasks"

    ledger = json.loads((remote / "ledger.json").read_text())
    reference = json.loads((local / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["inputs"] == info["images"]
    assert [ledger[k] for k in ("inputs", "kept", "rejects")] == [reference[k] for k in ("inputs", "kept", "rejects")]
    a, b = read_samples(str(local)), read_samples(str(remote))
    assert sorted(a) == sorted(b)
    for key in a:  # sample by sample: the same image bytes and the same metadata
        assert a[key] == b[key], key
