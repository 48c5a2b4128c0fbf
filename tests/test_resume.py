"""Kill a real `curate run` process midway (SIGKILL to its process group), rerun, compare."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds
from reliability.samples import read_samples
from run_helpers import base_overrides

pytestmark = pytest.mark.timeout(400)


def _cmd(crawl: Path, out: Path) -> list[str]:
    sets = []
    for o in base_overrides("ingest.shard_size=3", "run.num_cpus=2"):
        sets += ["--set", o]
    return [sys.executable, "-m", "curation.cli", "run", "-i", str(crawl), "-o", str(out), *sets]


def _keys(out: Path) -> list[str]:
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    urls = [str(out / "shards" / s["path"]) for s in manifest["shards"]]
    return [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]


def _done(out: Path, stage: str) -> int:
    return len(list((out / stage / "done").glob("*.json"))) if (out / stage / "done").exists() else 0


def test_killed_run_resumes_to_the_same_samples_each_once(sample_crawl, tmp_path):
    crawl, info = sample_crawl
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reference = tmp_path / "reference"
    subprocess.run(_cmd(crawl, reference), check=True, env=env, capture_output=True, timeout=300)
    total_shards = _done(reference, "ingest")

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(crawl, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if 2 <= _done(out, "ingest") < total_shards or 0 < _done(out, "decode") < total_shards:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait(timeout=30)
    partial_ingest, partial_decode = _done(out, "ingest"), _done(out, "decode")
    assert partial_decode < total_shards
    assert not (out / "shards" / "manifest.json").exists()

    result = subprocess.run(_cmd(crawl, out), check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    keys = _keys(out)
    assert len(keys) == len(set(keys))  # each sample once
    assert sorted(keys) == sorted(_keys(reference))  # the same set as the uninterrupted run
    # And the same samples, byte for byte. No field of a sample may differ: ids and input_shard come
    # from the plan saved by the first attempt, `source` names the same crawl files, and nothing in
    # a sample records a time or the run folder. Only the manifest's `created_at` differs; its shard
    # list (size and sha256 of each tar) must not: the resumed tars are byte-identical.
    resumed, clean = read_samples(str(out)), read_samples(str(reference))
    for key, (jpg, meta) in resumed.items():
        assert jpg == clean[key][0], key
        assert json.loads(meta) == json.loads(clean[key][1]), key
    manifests = [json.loads((o / "shards" / "manifest.json").read_text()) for o in (out, reference)]
    assert manifests[0]["shards"] == manifests[1]["shards"]
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["inputs"] == info["images"]
    print(f"killed after ingest {partial_ingest}/{total_shards}, decode {partial_decode}/{total_shards} shards")
