"""Balanced sampling down a cluster hierarchy to a target size (Vo et al. 2024, section 4).

The target T is split across the top-level clusters by *capping*: the largest integer cap x with
sum_i min(x, size_i) <= T, each cluster getting min(x, size_i), and the remainder (fewer than the
clusters still above the cap) given as +1 to clusters above the cap chosen at random. Small
clusters are thus taken whole and large ones trimmed to the same cap - the flattening that makes
the selected set balanced. The same rule splits each cluster's share among its children, level by
level, down to the level-1 clusters, where points are chosen at random or closest to the
centroid. `multiplier` m lets a cluster give up to m x its size (points repeated), for targets
near or above the data size.
"""

from __future__ import annotations

import itertools

import numpy as np


def find_cap(sizes: np.ndarray, target: int) -> int:
    """Largest integer x with sum(min(x, sizes)) <= target (binary search: the sum is monotone)."""
    lo, hi = 0, int(sizes.max(initial=0))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(sizes, mid).sum()) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cap_allocation(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Per-cluster share of `target`: min(cap, size) plus the remainder spread at random over
    clusters above the cap. Sums to min(target, sum(sizes))."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if target >= sizes.sum():
        return sizes.copy()
    cap = find_cap(sizes, target)
    share = np.minimum(sizes, cap)
    remainder = int(target - share.sum())
    if remainder:
        above = np.nonzero(sizes > cap)[0]  # len(above) > remainder, else cap+1 would fit
        share[rng.choice(above, size=remainder, replace=False)] += 1
    return share


def allocate(paths: np.ndarray, sizes: np.ndarray, target: int, multiplier: int = 1,
             seed: int = 0) -> np.ndarray:
    """Target per level-1 cluster.

    paths: [C, L] for each level-1 cluster, its id at levels 1..L (column 0 = its own id; a
           cluster id is unique within its level, so column l names the level-(l+1) ancestor).
    sizes: [C] points per level-1 cluster.
    """
    paths = np.asarray(paths, dtype=np.int64).reshape(len(sizes), -1)
    sizes = np.asarray(sizes, dtype=np.int64) * multiplier
    rng = np.random.default_rng(seed)
    n_levels = paths.shape[1]
    # unit_target: the share of every cluster of the level above, by that level's cluster id;
    # above the top there is one root holding the whole target.
    parent_ids = np.zeros(len(sizes), dtype=np.int64)
    parent_target = {0: int(target)}
    for col in range(n_levels - 1, -1, -1):
        units, first, inverse = np.unique(paths[:, col], return_index=True, return_inverse=True)
        unit_sizes = np.bincount(inverse, weights=sizes, minlength=len(units)).astype(np.int64)
        unit_parent = parent_ids[first]
        unit_target = np.zeros(len(units), dtype=np.int64)
        order = np.argsort(unit_parent, kind="stable")
        bounds = np.r_[0, np.nonzero(np.diff(unit_parent[order]))[0] + 1, len(order)]
        for lo, hi in itertools.pairwise(bounds):
            children = order[lo:hi]
            budget = parent_target.get(int(unit_parent[children[0]]), 0)
            unit_target[children] = cap_allocation(unit_sizes[children], budget, rng)
        parent_target = dict(zip(units.tolist(), unit_target.tolist()))
        parent_ids = paths[:, col]
    return np.array([parent_target[int(c)] for c in paths[:, 0]], dtype=np.int64)


def select_in_cluster(target: int, size: int, multiplier: int = 1, strategy: str = "random",
                      distances: np.ndarray | None = None, rng: np.random.Generator | None = None
                      ) -> np.ndarray:
    """Times each of the `size` points of one level-1 cluster is drawn, summing to `target`
    (<= size * multiplier): whole repeats first, then the rest at random or closest-first."""
    target = min(int(target), size * multiplier)
    repeats, rest = divmod(target, size) if size else (0, 0)
    counts = np.full(size, repeats, dtype=np.int32)
    if rest:
        if strategy == "closest":
            if distances is None:
                raise ValueError("closest-to-centroid sampling needs the distances")
            chosen = np.argsort(np.asarray(distances), kind="stable")[:rest]
        elif strategy == "random":
            chosen = (rng or np.random.default_rng()).choice(size, size=rest, replace=False)
        else:
            raise ValueError(f"strategy must be 'random' or 'closest', not {strategy!r}")
        counts[chosen] += 1
    return counts


def cluster_rng(seed: int, cluster: int) -> np.random.Generator:
    """One generator per level-1 cluster: the draw inside a cluster does not depend on which
    worker processes it or in what order."""
    return np.random.default_rng([seed, int(cluster) & 0x7FFFFFFF])


def hierarchical_sample(labels: np.ndarray, target: int, multiplier: int = 1,
                        strategy: str = "random", distances: np.ndarray | None = None,
                        seed: int = 0) -> np.ndarray:
    """Single-machine sampling: labels [N, L] cluster ids per level -> times drawn per point."""
    labels = np.asarray(labels, dtype=np.int64).reshape(len(labels), -1)
    bottom = labels[:, 0]
    clusters, first, inverse, sizes = np.unique(bottom, return_index=True, return_inverse=True,
                                                return_counts=True)
    quota = allocate(labels[first], sizes, target, multiplier, seed)
    counts = np.zeros(len(bottom), dtype=np.int32)
    order = np.argsort(inverse, kind="stable")
    bounds = np.r_[0, np.cumsum(sizes)]
    for c, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        members = order[lo:hi]
        counts[members] = select_in_cluster(
            quota[c], len(members), multiplier, strategy,
            None if distances is None else distances[members], cluster_rng(seed, clusters[c]))
    return counts
