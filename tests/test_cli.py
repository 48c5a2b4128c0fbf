"""The `curate` command as a user meets it: registry listing, status, and one-line errors."""

import json
import subprocess
import sys

import pytest

from run_helpers import base_overrides
from curation.config import load_config
from curation.pipeline import run_pipeline

pytestmark = pytest.mark.timeout(300)


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True, timeout=120)


def test_stages_lists_the_registry_in_dag_order():
    res = curate("stages", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    names = [r["name"] for r in rows]
    assert names[0] == "ingest" and names[-1] == "shard"
    assert {"ingest", "decode", "filter", "shard"} <= set(names)
    decode = next(r for r in rows if r["name"] == "decode")
    assert decode["produces"] == ["width", "height", "format", "mode", "orientation"]
    assert "decompression_bomb" in decode["rejects"] and decode["num_cpus"] == 1.0


def test_status_json_matches_the_ledger(ray_local, sample_crawl, tmp_path):
    crawl, _ = sample_crawl
    out = tmp_path / "out"
    run_pipeline(load_config(None, base_overrides()), str(crawl), str(out))
    res = curate("status", str(out), "--json")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    ledger = json.loads((out / "ledger.json").read_text())
    assert status["stages"] == ledger["stages"] and status["inputs"] == ledger["inputs"]
    assert status["stages"]["decode"]["shards_done"] == status["stages"]["decode"]["shards_total"]


@pytest.mark.parametrize("args,needle", [
    (["run", "-i", "/nonexistent/crawl", "-o", "/tmp/x"], "input not found"),
    (["run", "-i", ".", "-o", "/tmp/x", "--set", "decod.min_side=3"], "did you mean 'decode'"),
    (["run", "-i", ".", "-o", "/tmp/x", "--stage", "detekt"], "unknown stage"),
    (["status", "/nonexistent/out"], "not a run folder"),
    (["manifest", "verify", "/nonexistent/manifest.json"], "manifest not found"),
])
def test_user_mistakes_are_one_line_without_traceback(args, needle):
    res = curate(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
