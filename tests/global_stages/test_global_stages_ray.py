"""The cluster, sample and semdedup stages through Ray Data: balance end to end, reruns that
must not refit (sample reads no embeddings; cluster and semdedup reuse cached centroids), and
nothing lost (every input row comes back once)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import Ctx
from test_clustering_algorithms import normalised_entropy, power_law_mixture

from curation.config import Config
from curation.schema import arrow_type
from curation.stages import cluster as cluster_module
from curation.stages import semdedup as semdedup_module
from curation.stages.cluster import ClusterConfig, ClusterStage
from curation.stages.dag import all_stages
from curation.stages.sample import SampleConfig, SampleStage
from curation.stages.semdedup import SemdedupConfig, SemdedupStage

CLUSTER_CFG = ClusterConfig(k=[200, 50, 20], n_resampling_steps=[0, 10, 10], sample_size=[1, 3, 2])


def run_stage(stage, table: pa.Table, ctx) -> pa.Table:
    import ray
    import ray.data

    out = pa.concat_tables(ray.get(stage.run_global(ray.data.from_arrow(table), ctx).to_arrow_refs()))
    assert sorted(out["id"].to_pylist()) == sorted(table["id"].to_pylist())  # nothing lost or doubled
    position = {i: n for n, i in enumerate(out["id"].to_pylist())}
    return out.take([position[i] for i in table["id"].to_pylist()])  # in input order


def clip_table(x: np.ndarray) -> pa.Table:
    n = len(x)
    return pa.table({"id": [f"s{i % 4}-{i:06d}" for i in range(n)], "input_shard": [f"s{i % 4}" for i in range(n)],
                     "clip": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
                     "width": np.full(n, 64, np.int32), "height": np.full(n, 64, np.int32)})


@pytest.fixture(scope="module")
def clustered(ray_local, tmp_path_factory):
    x, component, sizes = power_law_mixture()
    cfg = Config(stages={"cluster": CLUSTER_CFG, "sample": SampleConfig(target=len(x) // 10)})
    ctx = Ctx(config=cfg, cache_uri=str(tmp_path_factory.mktemp("out") / "cluster" / "cache"))
    stage = ClusterStage(cfg)
    out = run_stage(stage, clip_table(x), ctx)
    assert stage.last_fit_cache_hit is False
    return x, component, sizes, cfg, ctx, out


def test_global_stages_are_registered_with_declared_columns():
    stages = all_stages()
    for name in ("phash", "semdedup", "cluster", "sample"):
        assert stages[name].kind == "global"
        for column in stages[name].produces:
            arrow_type(column)  # raises when schema.py does not declare it


def test_cluster_output_types_and_hierarchy(clustered):
    _, _, _, _, _, out = clustered
    assert out.schema.field("cluster_l1").type == pa.int32()
    assert out.schema.field("cluster_distance").type == pa.float32()
    assert out["cluster_l4"].null_count == out.num_rows  # 3 levels configured
    assert pc.max(out["cluster_l3"]).as_py() < 20 and out["reject"].null_count == out.num_rows
    l1, l2 = out["cluster_l1"].to_numpy(), out["cluster_l2"].to_numpy()
    assert all(len(set(l2[l1 == c])) == 1 for c in np.unique(l1))  # one parent per cluster


def test_sample_balances_power_law_mixture_through_the_stages(clustered, capsys):
    x, component, sizes, cfg, ctx, out = clustered
    sampled = run_stage(SampleStage(cfg), out, ctx)
    selected = sampled["selected"].to_numpy()
    assert selected.sum() == len(x) // 10
    not_selected = pc.fill_null(pc.equal(sampled["reject"], "not_selected"), False).to_numpy(zero_copy_only=False)
    assert ((selected == 0) == not_selected).all()
    entropy = normalised_entropy(component, selected, len(sizes))
    with capsys.disabled():
        print(f"\n[balance via cluster+sample stages] normalised entropy {entropy:.3f}")
    assert entropy >= 0.9


def test_sample_new_target_reads_only_cluster_columns(clustered, monkeypatch):
    """A new target re-runs `sample` alone: its input has no embeddings at all, so it cannot
    re-cluster; and `cluster` itself, rerun on the same input, refits nothing."""
    x, _, _, cfg, ctx, out = clustered
    assert "clip" not in SampleStage(cfg).required_columns()
    closest = Config(stages={"cluster": CLUSTER_CFG, "sample": SampleConfig(target=len(x) // 20, strategy="closest")})
    sampled = run_stage(SampleStage(closest), out, ctx)
    assert sampled["selected"].to_numpy().sum() == len(x) // 20
    sel = sampled["selected"].to_numpy() > 0
    dist, l1 = out["cluster_distance"].to_numpy(), out["cluster_l1"].to_numpy()
    for c in np.unique(l1[sel]):  # closest-first inside each level-1 cluster
        inside = l1 == c
        if (inside & ~sel).any():
            assert dist[inside & sel].max() <= dist[inside & ~sel].min()
    repeats = Config(stages={"cluster": CLUSTER_CFG, "sample": SampleConfig(target=2 * len(x), multiplier=3)})
    assert run_stage(SampleStage(repeats), out, ctx)["selected"].to_numpy().sum() == 2 * len(x)

    def no_fit(*args, **kwargs):
        raise AssertionError("hierarchical k-means ran again")

    monkeypatch.setattr(cluster_module, "hierarchical_kmeans", no_fit)
    stage = ClusterStage(cfg)
    again = run_stage(stage, clip_table(x), ctx)
    assert stage.last_fit_cache_hit is True and again.equals(out)
    changed = Config(stages={"cluster": ClusterConfig(k=[100, 20, 10], n_resampling_steps=[0, 1, 1],
                                                      sample_size=[1, 2, 2])})
    with pytest.raises(AssertionError, match="ran again"):  # a new config is a cache miss
        ClusterStage(changed).run_global(__import__("ray").data.from_arrow(clip_table(x)), ctx)


def test_semdedup_stage_planted_groups_and_cached_centroids(ray_local, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((400, 48))
    copies = np.repeat(base[:50], 2, axis=0) + 0.01 * rng.standard_normal((100, 48))  # 50 groups of 3
    x = np.concatenate([base, copies]).astype(np.float16)
    group = np.r_[np.arange(400), np.repeat(np.arange(50), 2)]
    table = clip_table(x)
    holes = pa.array(np.arange(len(x)) % 97 == 5)
    table = table.set_column(2, "clip", pc.if_else(holes, pa.nulls(len(x), table["clip"].type), table["clip"]))
    cfg = Config(stages={"semdedup": SemdedupConfig(n_clusters=6, eps=0.02)})
    ctx = Ctx(config=cfg, cache_uri=str(tmp_path / "cache"))
    stage = SemdedupStage(cfg)
    out = run_stage(stage, table, ctx)
    assert stage.last_fit_cache_hit is False
    kept = pc.is_null(out["reject"]).to_numpy(zero_copy_only=False)
    null_clip = np.arange(len(x)) % 97 == 5
    assert kept[null_clip].all()  # no embedding: nothing to compare, kept
    for g in np.unique(group):
        members = np.nonzero((group == g) & ~null_clip)[0]
        assert len(members) == 0 or kept[members].sum() == 1  # exactly one kept per planted group
    assert set(out["reject"].drop_null().to_pylist()) == {"semantic_duplicate"}

    monkeypatch.setattr(semdedup_module, "kmeans", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refit")))
    loose = SemdedupStage(Config(stages={"semdedup": SemdedupConfig(n_clusters=6, eps=0.3)}))
    out2 = run_stage(loose, table, ctx)  # a new eps: same centroids from the cache
    assert loose.last_fit_cache_hit is True
    assert pc.count(out2["semdup_of"]).as_py() >= pc.count(out["semdup_of"]).as_py()


def _runner_like(table: pa.Table):
    """A dataset shaped like the runner's: one block per shard, and a shard whose rows were all
    rejected upstream arrives as an empty block holding only id and input_shard."""
    import ray.data

    empty = pa.table({"id": pa.array([], pa.string()), "input_shard": pa.array([], pa.string())})
    blocks = {0: table, 1: empty}
    return ray.data.from_items([{"k": 0}, {"k": 1}], override_num_blocks=2).map_batches(
        lambda b: blocks[b["k"][0].as_py()], batch_format="pyarrow", batch_size=1)


def test_stages_accept_empty_shard_blocks(clustered):
    import ray

    x, _, _, cfg, ctx, out = clustered
    sampled = pa.concat_tables(ray.get(SampleStage(cfg).run_global(_runner_like(out), ctx).to_arrow_refs()))
    assert sampled.num_rows == len(x) and pc.sum(sampled["selected"]).as_py() == len(x) // 10
    semdedup_cfg = Config(stages={"semdedup": SemdedupConfig(n_clusters=4)})
    deduped = SemdedupStage(semdedup_cfg).run_global(_runner_like(clip_table(x[:500])),
                                                      Ctx(semdedup_cfg, ctx.cache_uri + "-sd"))
    assert sum(t.num_rows for t in ray.get(deduped.to_arrow_refs())) == 500
