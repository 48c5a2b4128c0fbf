"""semdedup bounds each map_groups call before the shuffle: clusters above max_cluster_size are
cut into sub-clusters (cached, fitted on a sample) and grouped by (cluster, sub), so no call
receives more than ~max_cluster_size rows, and one member of each planted group is still kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import Ctx
from test_global_stages_ray import clip_table, run_stage

from curation.config import Config
from curation.dedup import semantic_split
from curation.stages import semdedup as semdedup_module
from curation.stages.semdedup import SemdedupConfig, SemdedupStage

pytestmark = pytest.mark.timeout(300)
MAX = 400


def planted(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """3000 points in 3 blobs + one near copy of each of the first 200: k = 2 clusters of 3200
    rows means at least one cluster of > 1600 rows, 4x MAX."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 32))  # cosine ~0.5 inside a blob: no chance pairs at eps 0.02
    base = centres[rng.integers(0, 3, 3000)] + rng.standard_normal((3000, 32))
    copies = base[:200] + 0.001 * rng.standard_normal((200, 32))
    return np.concatenate([base, copies]).astype(np.float16), np.r_[np.arange(3000), np.arange(200)]


def recording(monkeypatch, log_dir):
    """Wrap the stage's per-group function so that every call logs how many rows it received
    (calls run in Ray workers: they write files, the test reads them)."""
    real = semdedup_module._dedup_cluster

    def logged(rows, **kw):
        key = (rows[semdedup_module.CLUSTER][0].as_py(), rows[semdedup_module.SUB][0].as_py())
        (log_dir / f"{key[0]}-{key[1]}-{rows.num_rows}.json").write_text(json.dumps(key))
        return real(rows, **kw)

    monkeypatch.setattr(semdedup_module, "_dedup_cluster", logged)
    return lambda: [int(p.stem.rsplit("-", 1)[1]) for p in log_dir.glob("*.json")]


def test_oversized_cluster_is_split_before_the_groupby(ray_local, tmp_path, monkeypatch):
    x, group = planted()
    table = clip_table(x)
    cfg = Config(stages={"semdedup": SemdedupConfig(n_clusters=2, eps=0.02, max_cluster_size=MAX)})
    ctx = Ctx(config=cfg, cache_uri=str(tmp_path / "cache"))
    (tmp_path / "calls").mkdir()
    calls = recording(monkeypatch, tmp_path / "calls")
    stage = SemdedupStage(cfg)
    out = run_stage(stage, table, ctx)
    assert stage.last_fit_cache_hit is False and stage.last_split_cache_hit is False
    sizes = calls()
    assert sum(sizes) == len(x) and len(sizes) > 2 * 2  # both clusters were cut
    assert max(sizes) <= MAX, sorted(sizes)[-5:]
    kept = pc.is_null(out["reject"]).to_numpy(zero_copy_only=False)
    per_group = np.bincount(group, weights=kept)
    assert per_group.min() >= 1  # never none kept
    assert (per_group[:200] == 1).all()  # each planted pair: the copy is found, one kept
    assert (per_group[200:] == 1).all()  # and distinct points stay

    # a new eps reuses centroids and sub-centroids: nothing is counted or fitted again
    monkeypatch.setattr(semdedup_module, "fit_sub_clusters", lambda *a, **k: pytest.fail("refit"))
    monkeypatch.setattr(SemdedupStage, "cluster_sizes", lambda *a, **k: pytest.fail("recounted"))
    again = SemdedupStage(Config(stages={"semdedup": SemdedupConfig(n_clusters=2, eps=0.03, max_cluster_size=MAX)}))
    run_stage(again, table, ctx)
    assert again.last_fit_cache_hit is True and again.last_split_cache_hit is True


def test_without_the_split_a_whole_cluster_reaches_one_call(ray_local, tmp_path, monkeypatch):
    """The control: with the default max_cluster_size no cluster is cut, and a call receives a
    whole cluster (what the test above bounds)."""
    x, _ = planted()
    cfg = Config(stages={"semdedup": SemdedupConfig(n_clusters=2, eps=0.02)})
    (tmp_path / "calls").mkdir()
    calls = recording(monkeypatch, tmp_path / "calls")
    stage = SemdedupStage(cfg)
    run_stage(stage, clip_table(x), Ctx(config=cfg, cache_uri=str(tmp_path / "cache")))
    assert stage.last_split_cache_hit is None  # 3200 rows <= 50k: no counting pass at all
    assert len(calls()) == 2 and max(calls()) > 4 * MAX


def test_sub_clusters_cells_fit_and_refits_stop():
    """Cells of a splittable cluster hold <= SAFE x max by the sample's estimate, cells assign
    rows of their own cluster only, and a cluster of identical vectors (k-means cannot split
    it) stops after MAX_REFITS doublings instead of looping."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1200, 16))
    subs = semantic_split.fit_sub_clusters({7: x, 9: np.ones((1200, 16))}, {7: 12_000, 9: 12_000}, 4_000,
                                           n_iter=10, seed=0, fit_points_per_centroid=32)
    assert subs.clusters.tolist() == [7, 9] and subs.cells(3) is None
    cells = subs.assign(x, np.full(len(x), 7))
    assert np.bincount(cells).max() / len(x) * 12_000 <= semantic_split.SAFE * 4_000
    assert len(subs.cells(9)) <= 6 * 2 ** semantic_split.MAX_REFITS
    assert (subs.assign(x[:5], np.array([1, 2, 3, 4, 5])) == 0).all()
    again = semantic_split.SubClusters.from_arrays(subs.to_arrays())
    assert (again.assign(x, np.full(len(x), 7)) == cells).all()
