"""Sub-clusters of oversized SemDeDup clusters, fixed before the shuffle.

`groupby(cluster).map_groups` hands one whole cluster to one call, so `split_oversized` inside
the call bounds the pairwise search but not the memory the call receives: a 1M-row cluster
arrives whole (1 GiB of float16 CLIP, 2 GiB as float32). The `semdedup` stage therefore
1. counts the rows of every cluster (a hash aggregate of the assignment: k output rows),
2. for each cluster above `max_cluster_size`, fits a sub-k-means of k_sub = ceil(2 size / max)
   cells on a uniform sample of that cluster's vectors (`fit_points_per_centroid` per cell:
   ~2 x 128 / 50k = 0.5% of its rows, never the cluster itself), cached like the centroids,
3. gives each row of such a cluster its nearest sub-centroid in the assign step and groups by
   (cluster, sub): groups of ~max / 2 rows on average.

Trade-off: pairs in two different sub-clusters of a giant cluster are never compared - the same
approximation `split_oversized` already makes (and the first k-means makes between clusters).
Near duplicates are close, so they rarely straddle a cell boundary; one is kept per connected
group *within* a (cluster, sub) key. k-means cells are not equal: while a cell's size estimated
from the sample exceeds SAFE x max, the cluster is refitted with twice the cells (MAX_REFITS
times). A cell that is still too big (many identical vectors cannot be split by k-means) is cut
in memory by `split_oversized`, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation.clustering import faiss_ops
from curation.clustering.hierarchical_kmeans import kmeans

SAFE = 0.75  # a cell's estimated size must stay below this fraction of max_cluster_size
MAX_REFITS = 3


@dataclass(frozen=True)
class SubClusters:
    """Sub-centroids of the oversized clusters, ragged: cluster c's cells are
    centroids[offsets[i]:offsets[i + 1]] where clusters[i] == c (clusters sorted)."""

    clusters: np.ndarray  # int64 [m]
    offsets: np.ndarray  # int64 [m + 1]
    centroids: np.ndarray  # float32 [sum k_sub, D]

    @classmethod
    def none(cls, dim: int = 0) -> SubClusters:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, dim), np.float32))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SubClusters:
        return cls(arrays["clusters"], arrays["offsets"], arrays["centroids"])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"clusters": self.clusters, "offsets": self.offsets, "centroids": self.centroids}

    def cells(self, cluster: int) -> np.ndarray | None:
        i = int(np.searchsorted(self.clusters, cluster))
        if i == len(self.clusters) or self.clusters[i] != cluster:
            return None
        return self.centroids[self.offsets[i]:self.offsets[i + 1]]

    def assign(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Sub-cluster per row (0 for rows of clusters that were not split); x L2-normalisable."""
        sub = np.zeros(len(labels), dtype=np.int64)
        for c in np.intersect1d(np.unique(labels), self.clusters):
            rows = np.flatnonzero(labels == c)
            sub[rows] = faiss_ops.nearest(x[rows], self.cells(int(c)), normalize=True)[0]
        return sub


def sample_fraction(max_cluster_size: int, fit_points_per_centroid: int) -> float:
    """Uniform sampling rate that gives a cluster of any size ~1.2 x fit_points_per_centroid
    points per cell when it is cut into cells of max / 2 rows."""
    return min(1.0, 1.2 * 2 * fit_points_per_centroid / max(1, max_cluster_size))


def fit_sub_clusters(samples: dict[int, np.ndarray], sizes: dict[int, int], max_cluster_size: int,
                     n_iter: int, seed: int, fit_points_per_centroid: int = 128) -> SubClusters:
    """Sub-centroids for every cluster in `sizes` (all above max_cluster_size), each fitted on
    that cluster's sampled vectors `samples[c]`."""
    clusters, offsets, cells = [], [0], []
    for c in sorted(sizes):
        x = faiss_ops.normalize_rows(np.asarray(samples.get(c, np.zeros((0, 0), np.float16))))
        if len(x) < 2:
            continue  # nothing to fit on (tiny sample): the call splits it in memory
        rng = np.random.default_rng([seed, c])  # per cluster: independent of which others exist
        k = math.ceil(2 * sizes[c] / max_cluster_size)
        for _ in range(MAX_REFITS + 1):
            centroids = kmeans(x, min(k, len(x)), n_iter, rng, fit_points_per_centroid=fit_points_per_centroid,
                               init="random")
            share = np.bincount(faiss_ops.nearest(x, centroids)[0], minlength=len(centroids)) / len(x)
            if share.max() * sizes[c] <= SAFE * max_cluster_size or k >= len(x):
                break
            k *= 2
        clusters.append(c)
        offsets.append(offsets[-1] + len(centroids))
        cells.append(faiss_ops.as_float32(centroids))
    if not clusters:
        return SubClusters.none(next((v.shape[1] for v in samples.values()), 0))
    return SubClusters(np.array(clusters, np.int64), np.array(offsets, np.int64), np.concatenate(cells))
