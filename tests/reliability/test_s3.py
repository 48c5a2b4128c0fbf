"""Input and output on s3:// through a real S3-compatible server on loopback (moto's server mode):
the product talks to it only through pyarrow.fs with endpoint and credentials from the AWS_*
variables; boto3 is used here only to create buckets and upload the crawl. The server is the `s3`
fixture of conftest.py."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest
from loopback_http import LoopbackServer
from run_helpers import base_overrides

from curation.io import fs
from curation.runner.lock import RunLocked, run_lock
from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config

from .procs import curate, run_args
from .samples import read_samples

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def _crawl(sample_crawl, url_base: str) -> dict[str, bytes]:
    """Two WebDataset tars of sample-crawl JPEGs and a URL list pointing at the loopback server."""
    crawl, _ = sample_crawl
    jpgs = sorted(p for p in crawl.rglob("*.jpg") if p.stat().st_size > 2000)[:10]
    files = {}
    for t, chunk in enumerate((jpgs[:4], jpgs[4:8])):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i, p in enumerate(chunk):
                data = p.read_bytes()
                info = tarfile.TarInfo(f"s{t}{i:03d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        files[f"part-{t}.tar"] = buf.getvalue()
    urls = [f"{url_base}/{p.relative_to(crawl).as_posix()}" for p in jpgs[8:]] + [f"{url_base}/missing.jpg"]
    files["urls.jsonl"] = "\n".join(json.dumps({"url": u}) for u in urls).encode()
    return files


def test_run_reads_and_writes_s3_and_matches_a_local_run(ray_local, s3, sample_crawl, tmp_path):
    env, client = s3
    crawl, _ = sample_crawl
    sets = base_overrides("ingest.shard_size=4", "shard.samples_per_shard=5")
    with LoopbackServer(root=crawl) as http:
        files = _crawl(sample_crawl, http.url)
        local_crawl = tmp_path / "crawl"
        local_crawl.mkdir()
        for name, data in files.items():
            client.put_object(Bucket="crawl", Key=f"c/{name}", Body=data)
            (local_crawl / name).write_bytes(data)
        r = curate(*run_args("s3://crawl/c", "s3://out/run", [*sets, "run.num_cpus=2"]), env_extra=env)
        assert r.returncode == 0, r.stderr[-3000:]
        reference = run_pipeline(load_config(None, sets), str(local_crawl), str(tmp_path / "local"))

    v = curate("manifest", "verify", "s3://out/run/shards/manifest.json", env_extra=env, timeout=120)
    assert v.returncode == 0 and v.stdout.startswith("OK: "), v.stdout + v.stderr
    rep = curate("report", "s3://out/run", "--open", env_extra={**env, "BROWSER": "true"}, timeout=180)
    assert rep.returncode == 0 and "report: s3://out/run/report" in rep.stdout, rep.stdout + rep.stderr
    assert "--open opens local reports only" in rep.stderr and "no web browser" not in rep.stderr
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="out", Prefix="run/")["Contents"]]
    assert "run/shards/manifest.json" in keys and "run/ledger.json" in keys
    assert "run/.lock" not in keys  # the lease is released at the end of the run
    ledger = fs.read_json("s3://out/run/ledger.json")
    assert ledger["balanced"] and ledger["inputs"] == 11 and ledger["rejects"].get("http_404") == 1
    assert [ledger[k] for k in ("inputs", "kept", "rejects")] == [reference[k] for k in ("inputs", "kept", "rejects")]

    remote, local = read_samples("s3://out/run"), read_samples(str(tmp_path / "local"))
    assert sorted(remote) == sorted(local) and len(remote) == ledger["kept"] > 0
    for key, (jpg, meta) in remote.items():
        m_remote, m_local = json.loads(meta), json.loads(local[key][1])
        assert jpg == local[key][0], key
        assert m_remote.pop("source", "").startswith(("s3://crawl/c/", "http://")), m_remote
        m_local.pop("source", None)
        assert m_remote == m_local, key


def test_s3_lease_refuses_a_second_holder_and_expires(s3, monkeypatch):
    from curation.runner import lock as lock_mod

    out = "s3://out/leased"
    with run_lock(out):
        holder = fs.read_json(f"{out}/.lock")
        with pytest.raises(RunLocked, match=f"pid {holder['pid']} on "), run_lock(out):
            pass
    assert not fs.exists(f"{out}/.lock")
    # a holder that died without releasing: refused while its heartbeat is fresh, taken once stale
    fs.write_json(f"{out}/.lock", {"pid": 999999, "host": "gone", "token": "x", "started": 0,
                                   "heartbeat": time.time()})
    with pytest.raises(RunLocked, match="pid 999999 on gone"), run_lock(out):
        pass
    monkeypatch.setattr(lock_mod, "STALE_S", 0.0)
    with run_lock(out):
        assert fs.read_json(f"{out}/.lock")["pid"] != 999999
