"""The foundation DAG end to end on the sample crawl, read back with the real webdataset reader."""

import json

import pytest
import webdataset as wds
from run_helpers import base_overrides

from curation.config import ConfigError
from curation.io import fs
from curation.manifests.manifest import verify_manifest
from curation.runner.pipeline import run_pipeline
from curation.stages.dag import load_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def full_run(base_run):
    return base_run


def _read_samples(out):
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    urls = [str(out / "shards" / s["path"]) for s in manifest["shards"]]
    return manifest, list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))


def test_accounting_balances_on_the_sample_crawl(full_run):
    out, summary, info = full_run
    assert summary["inputs"] == info["images"]
    assert summary["inputs"] == summary["kept"] + sum(summary["rejects"].values())
    assert summary["balanced"] and summary["complete"]
    # the broken files are rejects with a reason, not crashes and not silently gone
    assert summary["rejects"] == {"animated": 1, "decompression_bomb": 1, "empty_file": 1, "not_an_image": 1,
                                  "too_small": 1, "truncated": 1}
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["inputs"] == summary["inputs"] and ledger["kept"] == summary["kept"]


def test_shards_read_back_with_webdataset_and_verify(full_run):
    out, summary, _ = full_run
    manifest, samples = _read_samples(out)
    assert len(samples) == summary["kept"] == manifest["counts"]["samples"]
    assert len(manifest["shards"]) == -(-summary["kept"] // 40)  # rolled over by count
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)
    for s in samples:
        assert s["jpg"].mode == "RGB" and s["jpg"].size == (s["json"]["width"], s["json"]["height"])
        assert s["json"]["id"] == s["__key__"] and s["json"]["format"]
    assert verify_manifest(str(out / "shards" / "manifest.json")) == []
    assert manifest["config_hash"] and manifest["code_version"]


def test_manifest_verify_catches_tampering(full_run, tmp_path):
    import shutil

    out, _, _ = full_run
    copy = tmp_path / "shards"
    shutil.copytree(out / "shards", copy)
    first = min(copy.glob("*.tar"))
    data = bytearray(first.read_bytes())
    data[5000] ^= 0xFF
    first.write_bytes(bytes(data))
    problems = verify_manifest(str(copy / "manifest.json"))
    assert problems and "sha256" in problems[0]


def test_rerun_skips_finished_work(full_run, sample_crawl):
    out, summary, _ = full_run
    crawl, _ = sample_crawl
    before = {p: p.stat().st_mtime_ns for p in out.rglob("done/*.json")}
    cfg = load_config(None, base_overrides("shard.samples_per_shard=40"))
    again = run_pipeline(cfg, str(crawl), str(out))
    after = {p: p.stat().st_mtime_ns for p in out.rglob("done/*.json")}
    assert before == after  # nothing redone
    assert again["kept"] == summary["kept"]


def test_changed_config_needs_reconfigure_and_redoes_only_downstream(full_run, sample_crawl, tmp_path):
    import shutil

    out0, summary, _ = full_run
    crawl, _ = sample_crawl
    out = tmp_path / "out"
    shutil.copytree(out0, out)
    cfg = load_config(None, base_overrides("shard.samples_per_shard=40", "filters.min_width=1100"))
    with pytest.raises(ConfigError, match="different config.*filters"):
        run_pipeline(cfg, str(crawl), str(out))
    decode_before = {p: p.stat().st_mtime_ns for p in (out / "decode" / "done").glob("*.json")}
    result = run_pipeline(cfg, str(crawl), str(out), reconfigure=True)
    assert {p: p.stat().st_mtime_ns for p in (out / "decode" / "done").glob("*.json")} == decode_before
    assert result["rejects"].get("min_width", 0) > 0
    assert result["balanced"] and result["kept"] == summary["kept"] - result["rejects"]["min_width"]
    assert verify_manifest(str(out / "shards" / "manifest.json")) == []


def test_stage_by_stage_into_another_folder(ray_local, full_run, sample_crawl, tmp_path):
    """`curate run --stage X --input PREV --output OUT`: image bytes stay in PREV's ingest parts."""
    out0, summary, _ = full_run
    crawl, _ = sample_crawl
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = load_config(None, base_overrides("shard.samples_per_shard=40"))
    run_pipeline(cfg, str(crawl), str(a), stage="ingest")
    run_pipeline(cfg, str(a), str(a), stage="decode")
    with pytest.raises(ConfigError, match="not complete"):
        run_pipeline(cfg, str(a), str(b), stage="shard")
    run_pipeline(cfg, str(a), str(b), stage="filter")
    result = run_pipeline(cfg, str(b), str(b), stage="shard")
    assert not (b / "ingest").exists()  # nothing copied
    assert result["kept"] == summary["kept"]
    _, samples = _read_samples(b)
    assert sorted(s["__key__"] for s in samples) == sorted(s["__key__"] for s in _read_samples(out0)[1])
    assert fs.exists(str(b / "shards" / "manifest.json"))
