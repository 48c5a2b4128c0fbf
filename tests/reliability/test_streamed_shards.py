"""Shard tars are streamed to their final URI (never held whole in memory), appear whole or not
at all, match what webdataset's own writer produces byte for byte, and the Ray workers get the
allocator settings that keep their memory flat (run.worker_env)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import webdataset as wds

from curation.manifests.tar_writer import FIXED_MTIME, sample_tar

pytestmark = pytest.mark.timeout(120)


def _samples() -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"__key__": f"row-{i:04d}", "jpg": rng.bytes(int(rng.integers(10, 5000))),
             "json": {"id": f"row-{i:04d}", "score": float(i) / 3, "tags": ["a", i]},
             "clip.npy": rng.standard_normal(8).astype(np.float16)} for i in range(50)]


def test_streamed_tar_is_webdatasets_format_byte_for_byte(tmp_path):
    samples = _samples()
    with sample_tar(str(tmp_path / "ours.tar")) as sink:
        for s in samples:
            sink.write(s)
    ours = (tmp_path / "ours.tar").read_bytes()
    assert (sink.samples, sink.bytes, sink.sha256) == (50, len(ours), hashlib.sha256(ours).hexdigest())

    reference = io.BytesIO()
    with wds.TarWriter(reference, mtime=FIXED_MTIME) as writer:
        for s in samples:
            writer.write(s)
    assert ours == reference.getvalue()

    read = list(wds.WebDataset([str(tmp_path / "ours.tar")], shardshuffle=False, empty_check=False))
    assert [r["__key__"] for r in read] == [s["__key__"] for s in samples]
    assert read[7]["jpg"] == samples[7]["jpg"]
    assert json.loads(read[7]["json"]) == samples[7]["json"]
    assert np.array_equal(np.load(io.BytesIO(read[7]["clip.npy"])), samples[7]["clip.npy"])


def test_a_failed_tar_leaves_no_file_locally(tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"), sample_tar(str(tmp_path / "shards" / "x.tar")) as sink:
        sink.write(_samples()[0])
        raise RuntimeError("disk on fire")
    assert list((tmp_path / "shards").iterdir()) == []  # neither the tar nor its temp file


def test_a_tar_on_s3_appears_whole_or_not_at_all(s3):
    _, client = s3
    with pytest.raises(RuntimeError), sample_tar("s3://out/shards/broken.tar") as sink:
        sink.write(_samples()[0])
        raise RuntimeError("worker lost")
    with sample_tar("s3://out/shards/good.tar") as sink:
        for s in _samples():
            sink.write(s)
    objects = client.list_objects_v2(Bucket="out", Prefix="shards/").get("Contents", [])
    assert [o["Key"] for o in objects if not o["Key"].endswith("/")] == ["shards/good.tar"]  # "/": dir marker
    body = client.get_object(Bucket="out", Key="shards/good.tar")["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (sink.bytes, sink.sha256)


def test_ray_workers_get_the_allocator_settings():
    """A fresh local Ray (own process: the test session's Ray is already up) started the way
    `curate run` starts it. A task reports run.worker_env; a stage-style actor reports
    run.actor_env merged over it; a variable the user set in the driver keeps the user's value."""
    script = textwrap.dedent("""
        import json, os
        from curation.stages.dag import load_config
        from curation.runner.placement import actor_remote_args, ray_session

        cfg = load_config(None, [])
        os.environ["CURATE_PROBE"] = "user"  # the user's own setting wins over the config's
        keys = ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_", "CURATE_PROBE")

        def report():
            import pyarrow as pa
            return {**{k: os.environ.get(k) for k in keys}, "pool": pa.default_memory_pool().backend_name}

        with ray_session(num_cpus=1, worker_env={**cfg.run.worker_env, "CURATE_PROBE": "config"}) as ray:
            task = ray.remote(num_cpus=0.5)(report)
            Actor = ray.remote(num_cpus=0.5, **actor_remote_args(cfg.run.actor_env))(
                type("Probe", (), {"report": lambda self: report()}))
            print(json.dumps({"task": ray.get(task.remote()), "actor": ray.get(Actor.remote().report.remote())}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")}
    ray_tmp = tempfile.mkdtemp(prefix="rw-", dir="/tmp")  # short: Ray's socket paths are length-capped
    env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")
    try:
        out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=100,
                             env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["task"] == {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "131072",
                           "CURATE_PROBE": "user", "pool": "system"}
    assert got["actor"] == {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "33554432",
                            "CURATE_PROBE": "user", "pool": "system"}
