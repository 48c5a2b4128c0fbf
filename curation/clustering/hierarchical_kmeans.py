"""Hierarchical k-means with resampling (Vo et al. 2024, "Automatic Data Curation for
Self-Supervised Learning: A Clustering-Based Approach").

Level 1 clusters the embeddings; level l+1 clusters the centroids of level l. Each level runs
k-means with k-means++ seeding, then `n_resampling_steps` times: take the `sample_size` points
closest to each centroid, refit k-means on that (more balanced) set, and reassign every point.
Resampling pulls centroids away from dense regions, which is what makes the clusters of web data
balanced enough to sample from uniformly.

Scale-conscious choices (the paper runs this on 128 GPUs; here it must also fit 1M x 512 on 2
cores): greedy k-means++ seeds from a subsample of `init_points_per_centroid * k` points, Lloyd runs on a
subsample of `fit_points_per_centroid * k` points (faiss' own practice, 256 per centroid), and
only the assignment touches every point, a chunk at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from curation.clustering import dense_ops, faiss_ops


@dataclass(frozen=True)
class Level:
    k: int
    n_resampling_steps: int = 0
    sample_size: int = 1  # points per cluster used by a resampling step; <= 1 disables them


@dataclass
class Hierarchy:
    centroids: list[np.ndarray]  # per level: [k_l, D] float32
    parents: list[np.ndarray]  # per level l: cluster of level l+1 of each level-l centroid
    labels: np.ndarray  # [N] level-1 cluster of each fitted point
    distances: np.ndarray  # [N] distance of each fitted point to its level-1 centroid
    stats: dict = field(default_factory=dict)

    @property
    def n_levels(self) -> int:
        return len(self.centroids)

    def lift(self, level1: np.ndarray) -> np.ndarray:
        """[N, L] cluster ids at every level from level-1 ids."""
        out = [np.asarray(level1, dtype=np.int64)]
        for parent in self.parents:
            out.append(parent[out[-1]])
        return np.stack(out, axis=1)


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the greedy variant of sklearn and
    of Vo et al.'s code): for each next centre, draw `n_trials` candidates with probability
    proportional to D(x)^2, the squared distance to the nearest centre so far, and keep the one
    that lowers the total D^2 the most. n_trials=None means 2 + ln(k); 1 is plain k-means++.

    The greedy choice matters for balance: plain D^2 sampling often picks an isolated point, which
    then holds a cluster of its own; at the upper levels, where the points are centroids, such a
    singleton gets a whole cluster's quota while the other clusters lump many concepts together.

    Hand-written: sklearn's `kmeans_plusplus` re-runs generic pairwise-distance code per step;
    this keeps ||x||^2 and one running minimum, and scores the trials of a step with one
    [trials, n] product. Those products are too small to split across BLAS threads: one thread
    used a third of the CPU time of two (8k x 256 points, k = 1000, on a busy 2-core machine).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _greedy_seeds(faiss_ops.as_float32(x), k, rng, n_trials)


def _greedy_seeds(x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None) -> np.ndarray:
    n = len(x)
    trials = max(1, 2 + int(np.log(k)) if n_trials is None else int(n_trials))
    sq_norms = np.einsum("ij,ij->i", x, x)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    closest = np.maximum(sq_norms - 2 * x @ x[first] + sq_norms[first], 0)
    for c in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than k: repeat a point, Lloyd will empty it
            centres[c] = x[int(rng.integers(n))]
            continue
        picks = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * total), n - 1)
        d = sq_norms[None, :] - 2 * (x[picks] @ x.T) + sq_norms[picks, None]
        np.minimum(np.maximum(d, 0, out=d), closest[None, :], out=d)
        best = int(np.argmin(d.sum(axis=1)))
        closest = d[best]
        centres[c] = x[picks[best]]
    return centres


def kmeans(x: np.ndarray | dense_ops.Points, k: int, n_iter: int, rng: np.random.Generator,
           init_points_per_centroid: int = 4, fit_points_per_centroid: int = 128,
           init: str = "kmeans++", kmeanspp_trials: int | None = None) -> np.ndarray:
    """k-means++ seeding then Lloyd, each on a uniform subsample. Returns centroids. `x` is
    numpy rows (Lloyd in faiss) or `dense_ops.Points` (torch products, bfloat16 where fast).

    init="random" seeds from k random points instead (faiss' default): k-means++ is sequential in
    k, O(k^2 x init_points_per_centroid x D), which is fine for the hierarchy's k but not for
    SemDeDup's ~400k clusters at 4B rows.
    """
    n = len(x)
    k = max(1, min(k, n))
    dense = isinstance(x, dense_ops.Points)
    fit = x if n <= fit_points_per_centroid * k else _take(x, _subsample(n, fit_points_per_centroid * k, rng))
    if init == "random":
        if dense:
            start = fit.take(np.sort(rng.choice(len(fit), size=k, replace=False))).values().cpu().numpy()
            return dense_ops.lloyd(fit, start, max(1, n_iter), rng)
        if k == 1:
            return faiss_ops.as_float32(fit).mean(axis=0, keepdims=True)
        return faiss_ops.lloyd(fit, k, max(1, n_iter), seed=int(rng.integers(2**31)))
    if init != "kmeans++":
        raise ValueError(f"init must be 'kmeans++' or 'random', not {init!r}")
    seed_points = x if n <= init_points_per_centroid * k else _take(x, _subsample(n, init_points_per_centroid * k, rng))
    if dense:
        with dense_ops.torch_threads(1):  # one small product per centre: threads only add overhead
            centroids = dense_ops.greedy_seeds(seed_points, k, rng, kmeanspp_trials)
        return dense_ops.lloyd(fit, centroids, n_iter, rng)
    centroids = kmeans_plusplus(seed_points, k, rng, kmeanspp_trials)
    return faiss_ops.lloyd(fit, centroids, n_iter, seed=int(rng.integers(2**31)))


def _take(x: np.ndarray | dense_ops.Points, index: np.ndarray) -> np.ndarray | dense_ops.Points:
    return x.take(index) if isinstance(x, dense_ops.Points) else x[index]


def closest_per_cluster(labels: np.ndarray, distances: np.ndarray, per_cluster: int) -> np.ndarray:
    """Indices of the `per_cluster` points nearest to their centroid in every cluster."""
    order = np.lexsort((distances, labels))
    sorted_labels = labels[order]
    starts = np.r_[0, np.nonzero(sorted_labels[1:] != sorted_labels[:-1])[0] + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[rank < per_cluster]


def capped_assign(x: np.ndarray, centroids: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid with room, each centroid taking at most `cap` points (raised to
    ceil(n / k) if lower): in rounds, every unplaced point asks its nearest centroid that still
    has room, and each centroid takes its closest askers up to its room. For the upper levels,
    whose points are a few thousand centroids: [n, k] distances in memory."""
    x, c = faiss_ops.as_float32(x), faiss_ops.as_float32(centroids)
    d = np.maximum((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :], 0)
    n, k = d.shape
    labels = np.full(n, -1, dtype=np.int64)
    room = np.full(k, max(int(cap), -(-n // k)), dtype=np.int64)
    while (free := np.nonzero(labels < 0)[0]).size:
        choice = d[free].argmin(axis=1)
        order = np.lexsort((d[free, choice], choice))
        asked = choice[order]
        starts = np.r_[0, np.nonzero(asked[1:] != asked[:-1])[0] + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        take = rank < room[asked]
        labels[free[order[take]]] = asked[take]
        room -= np.bincount(asked[take], minlength=k)
        d[:, room <= 0] = np.inf
    return labels, np.linalg.norm(x - c[labels], axis=1)


def fit_level(x: np.ndarray | dense_ops.Points, level: Level, n_iter: int, rng: np.random.Generator,
              resample_strategy: str = "closest", capacity: float = 0.0,
              **kmeans_kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One level: (centroids, label per point, distance per point). With `capacity` > 0 a
    cluster holds at most capacity x (points / k) points (`capped_assign`)."""
    k = max(1, min(level.k, len(x) // 2))  # >= 2 points per cluster on average: small runs stay sane
    centroids = kmeans(x, k, n_iter, rng, **kmeans_kw)

    def nearest(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if capacity > 0:
            rows = x.values().cpu().numpy() if isinstance(x, dense_ops.Points) else x
            return capped_assign(rows, c, int(np.ceil(capacity * len(rows) / len(c))))
        return dense_ops.nearest(x, c) if isinstance(x, dense_ops.Points) else faiss_ops.nearest(x, c)

    labels, dist = nearest(centroids)
    if level.sample_size > 1:
        for _ in range(level.n_resampling_steps):
            if resample_strategy == "closest":
                picked = closest_per_cluster(labels, dist, level.sample_size)
            elif resample_strategy == "random":  # random rank inside each cluster
                picked = closest_per_cluster(labels, rng.random(len(labels)), level.sample_size)
            else:
                raise ValueError(f"resample_strategy must be 'closest' or 'random', not {resample_strategy!r}")
            if len(picked) < len(centroids):  # empty clusters left too few points to refit k
                break
            # re-seeded on the resampled set, as Vo et al. do: warm-starting Lloyd from the
            # current centroids instead keeps them where the dense regions put them
            centroids = kmeans(_take(x, np.sort(picked)), len(centroids), n_iter, rng, **kmeans_kw)
            labels, dist = nearest(centroids)
    return centroids, labels, dist


def hierarchical_kmeans(x: np.ndarray, levels: list[Level], n_iter: int = 20, seed: int = 0,
                        resample_strategy: str = "closest", normalize: bool = True,
                        precision: str | None = None, upper_capacity: float = 0.0,
                        **kmeans_kw) -> Hierarchy:
    """Fit the hierarchy on `x` ([N, D], any float dtype). With `normalize`, rows are L2-normalised
    first (CLIP embeddings compare by angle). `precision` (dense_ops.PRECISIONS) fits with torch
    products; None with faiss in float32. `upper_capacity` > 0 caps the clusters of levels 2 and
    up at that multiple of their mean number of children (`capped_assign`; level 1 is left to
    the data)."""
    if not levels:
        raise ValueError("hierarchical k-means needs at least one level")
    rng = np.random.default_rng(seed)
    if precision is not None:  # one augmented copy per level, normalised as it is built
        points = dense_ops.Points.from_array(x, precision, normalize)
    else:
        points = faiss_ops.normalize_rows(x) if normalize else x
    centroids, parents, seconds = [], [], []
    labels = distances = None
    for depth, level in enumerate(levels):
        start = time.perf_counter()
        # children are comparable units only where the level below was resampled (its centroids
        # spread over the support); unresampled, a dense concept holds many of them, and the
        # level above must gather them, not spread them out
        below = levels[depth - 1] if depth > 0 else None
        capped = below is not None and below.sample_size > 1 and below.n_resampling_steps > 0
        c, lab, dist = fit_level(points, level, n_iter, rng, resample_strategy,
                                 upper_capacity if capped else 0.0, **kmeans_kw)
        seconds.append(round(time.perf_counter() - start, 3))
        if depth == 0:
            labels, distances = lab, dist
        else:
            parents.append(lab)
        centroids.append(c)
        points = c if precision is None else dense_ops.Points.from_array(c, precision)
    sizes = np.bincount(labels, minlength=len(centroids[0]))
    return Hierarchy(centroids, parents, labels, distances,
                     stats={"level1_sizes_max": int(sizes.max()), "level1_empty": int((sizes == 0).sum()),
                            "seconds_per_level": seconds})


def _subsample(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=m, replace=False))
