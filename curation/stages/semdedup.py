"""Global stage `semdedup`: semantic duplicates by CLIP cosine similarity (SemDeDup, keeping one
per group). Algorithm in curation/dedup/semantic.py.

Ray Data steps:
  fit      driver: k-means (k-means++ seeds, faiss Lloyd) on a uniform sample of at most
           k * fit_points_per_centroid embeddings; centroids cached in `ctx.cache_uri` keyed by
           `ctx.input_fingerprint` and the k-means parameters, so a rerun with a new `eps` or
           keep policy does not refit. GPU faiss when present.
  split    (only when n > max_cluster_size) rows per cluster by a hash aggregate of the
           assignment; clusters above `max_cluster_size` get sub-centroids fitted on a small
           uniform sample of their rows (curation/dedup/semantic_split.py), cached beside the
           centroids. This pass repeats the nearest-centroid search once; a rerun skips it.
  assign   map_batches: nearest centroid per row (faiss, chunked float32), and the nearest
           sub-centroid for rows of a split cluster.
  dedup    groupby((cluster, sub)).map_groups: one call per group of <= ~max_cluster_size rows,
           so worker memory is O(max_cluster_size x D) before the call, not only inside it; the
           range search runs in query blocks.
At 4B rows: k ~ 400k clusters of ~10k (the SemDeDup setting); with fit_points_per_centroid=32 the
fit sees 13M x 512 (float16 13 GiB, a GPU driver), and the shuffle moves the 1 KiB embedding once
per row. docs/global_stages.md has the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.clustering import faiss_ops
from curation.clustering.arrow_vectors import vectors
from curation.clustering.hierarchical_kmeans import kmeans
from curation.config import StageConfig
from curation.dedup import cache
from curation.dedup.keep_policy import DEFAULT_KEEP, KeepPolicy
from curation.dedup.ray_ops import by_partition, columns_of, finalize, with_shuffle
from curation.dedup.semantic import cluster_keepers
from curation.dedup.semantic_split import SubClusters, fit_sub_clusters, sample_fraction
from curation.stages.base import Resources, Stage
from curation.stages.phash import upstream_columns
from curation.stages.registry import register_stage

CLUSTER = "_semdedup_cluster"
SUB = "_semdedup_sub"  # sub-cluster inside a cluster above max_cluster_size (0 elsewhere)
OUTPUT = ("id", "input_shard", "semdup_of", "reject")


@dataclass
class SemdedupConfig(StageConfig):
    eps: float = 0.05  # duplicates: cosine similarity >= 1 - eps
    n_clusters: int | None = None  # None: rows / points_per_cluster
    points_per_cluster: int = 10_000
    max_cluster_size: int = 50_000  # larger clusters are split into sub-clusters before the shuffle
    keep: list[str] = field(default_factory=lambda: list(DEFAULT_KEEP))
    n_iter: int = 20
    fit_points_per_centroid: int = 128  # k-means training sample per centroid
    init: str = "random"  # faiss' random-points init (SemDeDup's); "kmeans++" for small k
    shuffle: str = "auto"  # Ray shuffle of the groupby: auto | sort | push | hash (ray_ops.with_shuffle)


def _labels(x: np.ndarray, valid: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    labels = np.full(len(x), -1, dtype=np.int64)  # -1: no embedding, compared with nothing
    if valid.any():
        labels[valid] = faiss_ops.nearest(x[valid], centroids, normalize=True)[0]
    return labels


def _assign(batch: pa.Table, centroids: np.ndarray, subs: SubClusters, keep_cols: list[str]) -> pa.Table:
    x, valid = vectors(batch["clip"])
    labels = _labels(x, valid, centroids)
    cols = ["id", "input_shard", "clip", *[c for c in keep_cols if c in batch.column_names and c != "id"]]
    out = batch.select(cols).append_column(CLUSTER, pa.array(labels))
    return out.append_column(SUB, pa.array(subs.assign(x, labels)))


def _cluster_only(batch: pa.Table, centroids: np.ndarray) -> pa.Table:
    return pa.table({CLUSTER: _labels(*vectors(batch["clip"]), centroids)})


def _in_clusters(batch: pa.Table, centroids: np.ndarray, clusters: np.ndarray) -> pa.Table:
    """The sampled rows that fall in one of `clusters`, with their cluster."""
    x, valid = vectors(batch["clip"])
    labels = _labels(x, valid, centroids)
    keep = np.isin(labels, clusters)
    return pa.table({"clip": batch["clip"].filter(pa.array(keep)), CLUSTER: pa.array(labels[keep])})


def _dedup_cluster(rows: pa.Table, eps: float, max_cluster_size: int, keep: list[str], seed: int) -> pa.Table:
    rows = rows.sort_by("id")  # the keep choice and splits must not depend on shuffle order
    x, valid = vectors(rows["clip"])
    ids = np.asarray(rows["id"].to_pylist(), dtype=object)
    semdup_of = np.full(rows.num_rows, None, dtype=object)
    if rows[CLUSTER][0].as_py() >= 0 and valid.all():
        rank = KeepPolicy(tuple(keep)).rank(rows)
        kept = cluster_keepers(x, rank, eps, max_cluster_size, seed)
        dup = kept != np.arange(rows.num_rows)
        semdup_of[dup] = ids[kept[dup]]
    reject = np.where(semdup_of != None, "semantic_duplicate", None)
    out = rows.select(["id", "input_shard"]).append_column("semdup_of", pa.array(semdup_of.tolist(), pa.string()))
    return finalize(out.append_column("reject", pa.array(reject.tolist(), pa.string())), OUTPUT)


@register_stage
class SemdedupStage(Stage):
    name = "semdedup"
    kind = "global"
    requires = ("clip", "width", "height")
    produces = ("semdup_of",)
    rejects = ("semantic_duplicate",)
    resources = Resources(num_cpus=1, batch_size=4096)
    Config = SemdedupConfig
    description = "FAISS k-means on CLIP, then cosine >= 1-eps groups inside each cluster; one kept per group"

    last_fit_cache_hit: bool | None = None
    last_split_cache_hit: bool | None = None  # None: no cluster could exceed max_cluster_size

    @property
    def _cfg(self) -> SemdedupConfig:
        return self.params or SemdedupConfig()

    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c for c in KeepPolicy(tuple(self._cfg.keep)).columns() if c not in self.requires and c != "id")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, *upstream_columns(self, self.optional_columns()))

    def _fit_key(self, ctx, k: int) -> str:
        cfg = self._cfg
        return cache.cache_key(ctx.input_fingerprint, k, cfg.n_iter, cfg.fit_points_per_centroid, cfg.init, ctx.seed)

    def _k(self, n: int) -> int:
        return max(1, min(n, self._cfg.n_clusters or math.ceil(n / self._cfg.points_per_cluster)))

    def centroids(self, ds, ctx, n: int) -> np.ndarray:
        cfg = self._cfg
        k = self._k(n)
        name = "centroids-" + self._fit_key(ctx, k)
        uri = cache.join(ctx.cache_uri, name)
        stored = cache.load_arrays(uri)
        self.last_fit_cache_hit = stored is not None
        if stored is not None:
            return stored["centroids"]
        fit_rows = k * cfg.fit_points_per_centroid
        sample = columns_of(ds, ["clip"])
        if fit_rows < n:  # a uniform sample: the fit never needs all 4B rows on one machine
            sample = sample.random_sample(min(1.0, 1.2 * fit_rows / n), seed=ctx.seed)
        x = np.concatenate([vectors(b["clip"])[0] for b in sample.iter_batches(batch_format="pyarrow")])
        centroids = kmeans(faiss_ops.normalize_rows(x), k, cfg.n_iter, np.random.default_rng(ctx.seed),
                           fit_points_per_centroid=cfg.fit_points_per_centroid, init=cfg.init)
        cache.save_arrays(uri, {"centroids": centroids}, {"k": k, "fitted_on": len(x)})
        cache.prune(ctx.cache_uri, "centroids-", name)
        return centroids

    def cluster_sizes(self, ds, ctx, centroids: np.ndarray) -> np.ndarray:
        """Rows per cluster: a hash aggregate over the assignment (k output rows)."""
        import ray

        labels = columns_of(ds, ["clip"]).map_batches(_cluster_only, batch_format="pyarrow",
                                                      batch_size=self.effective_resources().batch_size,
                                                      fn_kwargs={"centroids": centroids})
        counted = with_shuffle(labels, self._cfg.shuffle, int(ctx.num_cpus)).groupby(CLUSTER).count()
        parts = [t for t in ray.get(counted.to_arrow_refs()) if t.num_rows]
        sizes = np.zeros(len(centroids), dtype=np.int64)
        for t in parts:
            c = t[CLUSTER].to_numpy()
            sizes[c[c >= 0]] = t["count()"].to_numpy()[c >= 0]
        return sizes

    def sub_clusters(self, ds, ctx, n: int, centroids: np.ndarray) -> SubClusters:
        """Sub-centroids of the clusters above max_cluster_size, fitted or from the cache."""
        cfg = self._cfg
        self.last_split_cache_hit = None
        if n <= cfg.max_cluster_size:  # no cluster can be too big: no counting pass
            return SubClusters.none(centroids.shape[1])
        name = "subclusters-" + cache.cache_key(self._fit_key(ctx, len(centroids)), cfg.max_cluster_size)
        uri = cache.join(ctx.cache_uri, name)
        stored = cache.load_arrays(uri)
        self.last_split_cache_hit = stored is not None
        if stored is not None:
            return SubClusters.from_arrays(stored)
        sizes = self.cluster_sizes(ds, ctx, centroids)
        big = np.flatnonzero(sizes > cfg.max_cluster_size)
        subs = SubClusters.none(centroids.shape[1])
        if len(big):
            sample = columns_of(ds, ["clip"]).random_sample(
                sample_fraction(cfg.max_cluster_size, cfg.fit_points_per_centroid), seed=ctx.seed)
            got = [b for b in sample.map_batches(_in_clusters, batch_format="pyarrow", fn_kwargs={
                "centroids": centroids, "clusters": big}).iter_batches(batch_format="pyarrow") if b.num_rows]
            x = np.concatenate([vectors(b["clip"])[0] for b in got]) if got else np.zeros((0, centroids.shape[1]))
            labels = np.concatenate([b[CLUSTER].to_numpy() for b in got]) if got else np.zeros(0, np.int64)
            subs = fit_sub_clusters({int(c): x[labels == c] for c in big}, {int(c): int(sizes[c]) for c in big},
                                    cfg.max_cluster_size, cfg.n_iter, int(ctx.seed), cfg.fit_points_per_centroid)
        cache.save_arrays(uri, subs.to_arrays(), {"sizes_above_max": {int(c): int(sizes[c]) for c in big}})
        cache.prune(ctx.cache_uri, "subclusters-", name)
        return subs

    def run_global(self, ds, ctx):
        cfg = self._cfg
        n = ds.count()
        if n == 0:
            return ds.map_batches(lambda t: finalize(t, OUTPUT), batch_format="pyarrow")
        centroids = self.centroids(ds, ctx, n)
        subs = self.sub_clusters(ds, ctx, n, centroids)
        assigned = ds.map_batches(_assign, batch_format="pyarrow", batch_size=self.effective_resources().batch_size,
                                  fn_kwargs={"centroids": centroids, "subs": subs,
                                             "keep_cols": list(KeepPolicy(tuple(cfg.keep)).columns())})
        # ~1M rows (1 GiB of float16 CLIP) per shuffle partition; each call sees one (cluster, sub)
        n_parts = max(int(ctx.num_cpus), math.ceil(n / 1_000_000))
        return by_partition(assigned, n_parts, _dedup_cluster, key=[CLUSTER, SUB], shuffle=cfg.shuffle,
                            eps=cfg.eps, max_cluster_size=cfg.max_cluster_size, keep=list(cfg.keep), seed=int(ctx.seed))
