"""Reruns of a finished run folder with `--reconfigure`, through the real runner on the sample
crawl: a new sampling target must not re-cluster, a new dedup threshold must not
re-hash. One run of ingest, decode, embed (random-weight CLIP), phash, cluster and sample is
shared; each test reruns a copy of it."""

from __future__ import annotations

import json
import shutil

import pytest

from curation.config import ConfigError
from curation.runner.pipeline import run_pipeline
from curation.runner.store import RunStore
from curation.stages import cluster as cluster_module
from curation.stages.dag import load_config
from curation.stages.phash import PhashStage

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]  # one ~1 min pipeline run, shared

BASE = ["run.stages=[ingest,decode,embed,phash,cluster,sample]", "embed.weights=random",
        "filters.min_person_short_side=null",
        "ingest.shard_size=32", "cluster.k=[6,3,2]", "cluster.n_resampling_steps=[0,2,2]",
        "cluster.sample_size=[1,2,1]", "sample.target_fraction=0.5"]


def snapshot(out, stage: str) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every done record of a stage."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((out / stage / "done").glob("*.json"))}


def cache_files(out, stage: str, prefix: str) -> dict[str, int]:
    root = out / stage / "cache"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.relative_to(root).parts[0].startswith(prefix)}


def selected(out) -> int:
    store = RunStore(str(out))
    return sum(sum(r["selected"] or 0 for r in RunStore.read_parts(rec).to_pylist())
               for rec in store.done_records("sample").values() if rec["parts"])


@pytest.fixture(scope="module")
def first_run(ray_local, sample_crawl, tmp_path_factory):
    crawl, _ = sample_crawl
    out = tmp_path_factory.mktemp("rerun") / "out"
    summary = run_pipeline(load_config(None, BASE), str(crawl), str(out))
    return crawl, out, summary


def copy_of(first_run, tmp_path):
    crawl, out, summary = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return crawl, copy, summary


def test_new_sample_target_reruns_sample_only(first_run, tmp_path, monkeypatch):
    crawl, out, _ = copy_of(first_run, tmp_path)
    before = {stage: snapshot(out, stage) for stage in ("decode", "embed", "phash", "cluster")}
    sample_before = snapshot(out, "sample")
    hierarchy = cache_files(out, "cluster", "hierarchy-")
    assert hierarchy and sample_before
    n_before = selected(out)

    def no_fit(*args, **kwargs):
        raise AssertionError("hierarchical k-means ran again")

    monkeypatch.setattr(cluster_module, "hierarchical_kmeans", no_fit)  # the fit runs on the driver
    cfg = load_config(None, [*BASE[:-1], "sample.target_fraction=0.25"])
    with pytest.raises(ConfigError, match="different config"):
        run_pipeline(cfg, str(crawl), str(out))
    run_pipeline(cfg, str(crawl), str(out), reconfigure=True)
    for stage, records in before.items():
        assert snapshot(out, stage) == records, f"{stage} was redone"
    assert cache_files(out, "cluster", "hierarchy-") == hierarchy
    after = snapshot(out, "sample")
    assert after.keys() == sample_before.keys()
    assert all(after[k][0] != sample_before[k][0] for k in after)  # every sample record rewritten
    n_rows = sum(json.loads(v[1])["in"] for v in after.values())
    assert selected(out) == n_rows // 4 and n_before == n_rows // 2


def test_new_phash_threshold_reuses_cached_hashes(first_run, tmp_path, monkeypatch):
    crawl, out, summary = copy_of(first_run, tmp_path)
    hashes = cache_files(out, "phash", "hashes-")
    assert any(name.endswith(".done") for name in hashes) and len(hashes) > 2
    embed = snapshot(out, "embed")
    phash_before = snapshot(out, "phash")
    hits: list[bool | None] = []
    real_hashes = PhashStage.hashes

    def spy(self, ds, ctx):
        result = real_hashes(self, ds, ctx)
        hits.append(self.last_hash_cache_hit)
        return result

    monkeypatch.setattr(PhashStage, "hashes", spy)
    cfg = load_config(None, [*BASE, "phash.max_distance=10"])
    result = run_pipeline(cfg, str(crawl), str(out), reconfigure=True)
    assert hits == [True]  # phash ran again, from the cached hashes
    assert cache_files(out, "phash", "hashes-") == hashes  # nothing re-hashed or rewritten
    assert snapshot(out, "embed") == embed
    assert all(snapshot(out, "phash")[k][0] != phash_before[k][0] for k in phash_before)  # regrouped
    near = [r.get("near_duplicate", 0) for r in (summary["rejects"], result["rejects"])]
    assert near[1] >= near[0] and near[0] > 0
