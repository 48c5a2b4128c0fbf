"""SemDeDup (Abbas et al. 2023): semantic duplicates by CLIP-embedding cosine similarity.

k-means partitions the (L2-normalised) embeddings so that only points of the same cluster are
compared; inside a cluster, pairs with cosine >= 1 - eps are linked and every connected group
keeps exactly one member (by the keep policy). SemDeDup's released code drops every member of a
pair above the threshold; here one is always kept - a duplicate group is one image, not zero.

Memory per cluster is bounded twice: a cluster above `max_cluster_size` is split by k-means into
parts below it (near duplicates are close, so they land in the same part except at the rare
part boundary - the same approximation the first k-means already makes), and the range search
runs a block of queries at a time, so at most `pair_budget` candidate pairs exist at once.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from curation.clustering import faiss_ops
from curation.clustering.hierarchical_kmeans import kmeans
from curation.dedup.keep_policy import keepers
from curation.dedup.union_find import components, star_edges

PAIR_BUDGET = 8_000_000  # ~128 MiB of (int64, int64) candidate pairs per query block


def split_oversized(x: np.ndarray, max_cluster_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row-index parts of x, each of at most `max_cluster_size` rows (k-means splits)."""
    if len(x) <= max_cluster_size:
        return [np.arange(len(x))]
    k = math.ceil(2 * len(x) / max_cluster_size)
    labels, _ = faiss_ops.nearest(x, kmeans(x, k, 10, rng))
    parts = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        if len(idx) == len(x):  # k-means could not split (e.g. all vectors equal): cut in order
            return [idx[i:i + max_cluster_size] for i in range(0, len(idx), max_cluster_size)]
        parts.extend(idx[sub] for sub in split_oversized(x[idx], max_cluster_size, rng))
    return parts


def similar_groups(x: np.ndarray, eps: float, pair_budget: int = PAIR_BUDGET) -> np.ndarray:
    """Component label per row of one (bounded) cluster: rows linked by cosine >= 1 - eps."""
    x = faiss_ops.as_float32(x, normalize=True)
    n = len(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    radius = float(1.0 - eps) - 1e-6  # faiss keeps inner products > radius; we want >= 1 - eps
    block = max(1, pair_budget // max(n, 1))
    roots, members = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for start in range(0, n, block):
        lims, _, found = index.range_search(x[start:start + block], radius)
        query = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
        # fold this block into a star forest right away: memory stays O(n + block pairs)
        labels = components(n, np.r_[roots, query], np.r_[members, found])
        roots, members = star_edges(labels)
    return components(n, roots, members)


def cluster_keepers(x: np.ndarray, rank: np.ndarray, eps: float, max_cluster_size: int,
                    seed: int = 0) -> np.ndarray:
    """Kept row of each row's semantic-duplicate group within one k-means cluster."""
    rng = np.random.default_rng(seed)
    keep = np.arange(len(x))
    for part in split_oversized(faiss_ops.normalize_rows(np.asarray(x)), max_cluster_size, rng):
        groups = similar_groups(x[part], eps)
        keep[part] = part[keepers(groups, rank[part])]
    return keep


def semdedup(x: np.ndarray, rank: np.ndarray, n_clusters: int, eps: float,
             max_cluster_size: int = 50_000, n_iter: int = 20, seed: int = 0) -> np.ndarray:
    """Single-machine SemDeDup: kept row of each row's group (itself when kept)."""
    x = faiss_ops.normalize_rows(np.asarray(x))
    rng = np.random.default_rng(seed)
    labels, _ = faiss_ops.nearest(x, kmeans(x, n_clusters, n_iter, rng))
    keep = np.arange(len(x))
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        keep[idx] = idx[cluster_keepers(x[idx], rank[idx], eps, max_cluster_size, seed)]
    return keep
