"""Hierarchical k-means and balanced sampling on their own (no Ray), and the balance test."""

from __future__ import annotations

import numpy as np
import pytest

from curation.clustering import dense_ops
from curation.clustering.balanced_sampling import (
    allocate,
    cap_allocation,
    find_cap,
    hierarchical_sample,
    select_in_cluster,
)
from curation.clustering.hierarchical_kmeans import (
    Level,
    capped_assign,
    closest_per_cluster,
    hierarchical_kmeans,
    kmeans_plusplus,
)
from curation.clustering.synthetic import balance


def power_law_mixture(seed: int = 0, n_components: int = 20, dim: int = 64):
    """Gaussian blobs on the sphere whose sizes follow a power law (largest/smallest = 120)."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum(np.round(3000 * np.arange(1, n_components + 1) ** -1.6).astype(int), 25)
    centres = rng.standard_normal((n_components, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    component = np.repeat(np.arange(n_components), sizes)
    x = centres[component] + 0.6 / np.sqrt(dim) * rng.standard_normal((len(component), dim))
    return x.astype(np.float16), component, sizes


def normalised_entropy(component: np.ndarray, counts: np.ndarray, n_components: int) -> float:
    return balance(component, counts, n_components)["entropy"]


def test_find_cap_is_the_largest_feasible_cap():
    rng = np.random.default_rng(1)
    for _ in range(200):
        sizes = rng.integers(0, 50, rng.integers(1, 12))
        target = int(rng.integers(0, sizes.sum() + 1))
        cap = find_cap(sizes, target)
        assert np.minimum(sizes, cap).sum() <= target
        assert cap == sizes.max() or np.minimum(sizes, cap + 1).sum() > target
        share = cap_allocation(sizes, target, rng)
        assert share.sum() == target and (share <= sizes).all()
        assert (share[sizes <= cap] == sizes[sizes <= cap]).all()  # small clusters taken whole
        assert set(share[sizes > cap].tolist()) <= {cap, cap + 1}  # the rest at the cap (+1)


def test_allocate_recurses_down_the_hierarchy():
    # level-2 cluster 0 holds level-1 clusters 0,1 (sizes 100, 2); level-2 cluster 1 holds 2 (size 10)
    paths = np.array([[0, 0], [1, 0], [2, 1]])
    quota = allocate(paths, np.array([100, 2, 10]), target=20)
    assert quota.tolist() == [8, 2, 10]  # top: cap 10 -> (10, 10); inside top cluster 0: (8, 2)
    assert allocate(paths, np.array([100, 2, 10]), target=1000).tolist() == [100, 2, 10]
    assert allocate(paths, np.array([100, 2, 10]), target=300, multiplier=2).tolist() == [200, 4, 20]


def test_select_in_cluster_repeats_and_closest():
    dist = np.array([0.5, 0.1, 0.9, 0.3])
    assert select_in_cluster(2, 4, strategy="closest", distances=dist).tolist() == [0, 1, 0, 1]
    assert select_in_cluster(6, 4, multiplier=2, strategy="closest", distances=dist).tolist() == [1, 2, 1, 2]
    counts = select_in_cluster(3, 10, rng=np.random.default_rng(0))
    assert counts.sum() == 3 and counts.max() == 1


def test_kmeans_plusplus_seeds_every_separated_blob():
    rng = np.random.default_rng(0)
    x = np.repeat(np.eye(8) * 100, 50, axis=0) + rng.standard_normal((400, 8))
    centres = kmeans_plusplus(x, 8, rng)
    assert len({int(np.argmax(c)) for c in centres}) == 8


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_dense_products_give_nearest_centroid_and_distance(precision):
    """The augmented product is half the squared distance: labels match exact search up to the
    rounding of the compute dtype, and the distances match to that rounding too."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 48)).astype(np.float16)
    c = rng.standard_normal((70, 48)).astype(np.float32)
    labels, dist = dense_ops.nearest_rows(x, c, precision, chunk_rows=1000)
    exact = np.linalg.norm(x.astype(np.float32)[:, None, :] - c[None], axis=2)
    best = exact.min(axis=1)
    tol = 1e-4 if precision == "float32" else 2e-2  # bfloat16: 2^-9 of d^2 in the inputs and the product
    assert (exact[np.arange(len(x)), labels] <= best * (1 + tol)).all()
    assert np.allclose(dist, exact[np.arange(len(x)), labels], rtol=tol)
    if precision == "float32":
        assert (labels == exact.argmin(axis=1)).all()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_dense_kmeans_finds_separated_blobs_and_refills_empty_clusters(precision):
    rng = np.random.default_rng(1)
    x = np.repeat(np.eye(8) * 10, 60, axis=0) + rng.standard_normal((480, 8))
    points = dense_ops.Points.from_array(x, precision)
    seeds = dense_ops.greedy_seeds(points, 8, rng, None)
    assert len({int(np.argmax(c)) for c in seeds}) == 8
    # two centroids start on the same blob's far side: Lloyd moves them, none stays empty
    start = np.vstack([seeds[:7], np.full((1, 8), 1000.0)])
    centroids = dense_ops.lloyd(points, start, 10, rng)
    labels, _ = dense_ops.nearest(points, centroids)
    assert len(np.unique(labels)) == 8 and np.abs(centroids).max() < 20


def test_capped_assign_respects_the_cap_and_is_nearest_without_one():
    rng = np.random.default_rng(2)
    x = np.vstack([rng.standard_normal((150, 4)) * 0.1, rng.standard_normal((50, 4)) * 0.1 + 3])
    c = np.array([[0, 0, 0, 0], [3, 3, 3, 3], [0.5, 0, 0, 0], [2.5, 3, 3, 3]], dtype=np.float32)
    exact = np.linalg.norm(x[:, None, :] - c[None], axis=2)
    free, dist = capped_assign(x, c, cap=len(x))
    assert (free == exact.argmin(axis=1)).all() and np.allclose(dist, exact.min(axis=1), atol=1e-5)
    labels, _ = capped_assign(x, c, cap=60)
    assert np.bincount(labels, minlength=4).max() <= 60
    # the overflow of the dense blob goes to the other centroid near it, not across the gap
    assert set(labels[:150].tolist()) <= {0, 2, 3} and (labels[150:] != 0).all()
    assert capped_assign(x, c, cap=1)[0].size == len(x)  # a cap below n / k is raised to it


def test_hierarchy_shapes_resampling_and_determinism():
    x, _, _ = power_law_mixture(seed=3, n_components=10, dim=16)
    levels = [Level(60, 0, 1), Level(15, 5, 3), Level(5, 5, 2)]
    h = hierarchical_kmeans(x, levels, n_iter=10, seed=7)
    assert [len(c) for c in h.centroids] == [60, 15, 5]
    assert [len(p) for p in h.parents] == [60, 15] and h.parents[1].max() < 5
    lab = h.lift(h.labels)
    assert lab.shape == (len(x), 3) and (lab[:, 1] == h.parents[0][lab[:, 0]]).all()
    again = hierarchical_kmeans(x, levels, n_iter=10, seed=7)
    assert (again.labels == h.labels).all()
    picked = closest_per_cluster(h.labels, h.distances, 2)
    assert np.bincount(h.labels[picked]).max() <= 2


def test_balance_power_law_mixture(capsys):
    """Sampling 10% through the hierarchy flattens a power-law mixture; uniform sampling does not."""
    x, component, sizes = power_law_mixture()
    assert sizes.max() / sizes.min() >= 100
    levels = [Level(200, 0, 1), Level(50, 10, 3), Level(20, 10, 2)]
    # the stage's upper capacity: level 2 sits above an unresampled level 1 and must stay uncapped
    # (capping it spreads the big components' many level-1 clusters: 0.86 measured, not 0.99)
    h = hierarchical_kmeans(x, levels, n_iter=20, seed=0, upper_capacity=1.2)
    labels = h.lift(h.labels)
    target = len(x) // 10
    result = {}
    for strategy in ("random", "closest"):
        counts = hierarchical_sample(labels, target, strategy=strategy, distances=h.distances, seed=0)
        assert counts.sum() == target and counts.max() == 1
        result[strategy] = normalised_entropy(component, counts, len(sizes))
    uniform = np.zeros(len(x))
    uniform[np.random.default_rng(0).choice(len(x), target, replace=False)] = 1
    result["uniform"] = normalised_entropy(component, uniform, len(sizes))
    with capsys.disabled():
        print(f"\n[balance] {len(x)} points, {len(sizes)} components (largest/smallest "
              f"{sizes.max() / sizes.min():.0f}), 10% sample, normalised entropy over components: "
              f"hierarchical random {result['random']:.3f}, closest {result['closest']:.3f}, "
              f"uniform random {result['uniform']:.3f}")
    assert result["random"] >= 0.9 and result["closest"] >= 0.9
    assert result["uniform"] < result["random"] - 0.15


@pytest.mark.parametrize("bad", ["furthest"])
def test_unknown_strategies_raise(bad):
    with pytest.raises(ValueError):
        select_in_cluster(1, 3, strategy=bad)
