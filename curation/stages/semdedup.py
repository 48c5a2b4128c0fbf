"""Global stage `semdedup`: semantic duplicates by CLIP cosine similarity (SemDeDup, keeping one
per group). Algorithm in curation/dedup/semantic.py.

Ray Data steps:
  fit      driver: k-means (k-means++ seeds, faiss Lloyd) on a uniform sample of at most
           k * fit_points_per_centroid embeddings; centroids cached in `ctx.cache_uri` keyed by
           `ctx.input_fingerprint` and the k-means parameters, so a rerun with a new `eps` or
           keep policy does not refit. GPU faiss when present.
  assign   map_batches: nearest centroid per row (faiss, chunked float32).
  dedup    groupby(cluster).map_groups: one call per cluster; inside, clusters above
           `max_cluster_size` are split by k-means and the range search runs in query blocks,
           so worker memory is O(max_cluster_size x D) whatever the cluster sizes.
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
from curation.dedup.ray_ops import by_partition, columns_of, finalize
from curation.dedup.semantic import cluster_keepers
from curation.stages.base import Resources, Stage
from curation.stages.phash import upstream_columns
from curation.stages.registry import register_stage

CLUSTER = "_semdedup_cluster"
OUTPUT = ("id", "input_shard", "semdup_of", "reject")


@dataclass
class SemdedupConfig(StageConfig):
    eps: float = 0.05  # duplicates: cosine similarity >= 1 - eps
    n_clusters: int | None = None  # None: rows / points_per_cluster
    points_per_cluster: int = 10_000
    max_cluster_size: int = 50_000  # larger clusters are split before the pairwise search
    keep: list[str] = field(default_factory=lambda: list(DEFAULT_KEEP))
    n_iter: int = 20
    fit_points_per_centroid: int = 128  # k-means training sample per centroid
    init: str = "random"  # faiss' random-points init (SemDeDup's); "kmeans++" for small k
    shuffle: str = "auto"  # Ray shuffle of the groupby: auto | sort | push | hash (ray_ops.with_shuffle)


def _assign(batch: pa.Table, centroids: np.ndarray, keep_cols: list[str]) -> pa.Table:
    x, valid = vectors(batch["clip"])
    labels = np.full(batch.num_rows, -1, dtype=np.int64)
    if valid.any():
        labels[valid] = faiss_ops.nearest(x[valid], centroids, normalize=True)[0]
    cols = ["id", "input_shard", "clip", *[c for c in keep_cols if c in batch.column_names and c != "id"]]
    return batch.select(cols).append_column(CLUSTER, pa.array(labels))


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
    order = 90
    requires = ("clip", "width", "height")
    produces = ("semdup_of",)
    rejects = ("semantic_duplicate",)
    resources = Resources(num_cpus=1, batch_size=4096)
    Config = SemdedupConfig
    description = "FAISS k-means on CLIP, then cosine >= 1-eps groups inside each cluster; one kept per group"

    last_fit_cache_hit: bool | None = None

    @property
    def _cfg(self) -> SemdedupConfig:
        return self.cfg or SemdedupConfig()

    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c for c in KeepPolicy(tuple(self._cfg.keep)).columns() if c not in self.requires and c != "id")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, *upstream_columns(self, self.optional_columns()))

    def centroids(self, ds, ctx, n: int) -> np.ndarray:
        cfg = self._cfg
        k = max(1, min(n, cfg.n_clusters or math.ceil(n / cfg.points_per_cluster)))
        name = "centroids-" + cache.cache_key(ctx.input_fingerprint, k, cfg.n_iter, cfg.fit_points_per_centroid,
                                              cfg.init, ctx.seed)
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

    def run_global(self, ds, ctx):
        cfg = self._cfg
        n = ds.count()
        if n == 0:
            return ds.map_batches(lambda t: finalize(t, OUTPUT), batch_format="pyarrow")
        centroids = self.centroids(ds, ctx, n)
        assigned = ds.map_batches(_assign, batch_format="pyarrow", batch_size=self.effective_resources().batch_size,
                                  fn_kwargs={"centroids": centroids, "keep_cols": list(KeepPolicy(tuple(cfg.keep)).columns())})
        # ~1M rows (1 GiB of float16 CLIP) per shuffle partition; each call sees one cluster
        n_parts = max(int(ctx.num_cpus), math.ceil(n / 1_000_000))
        return by_partition(assigned, n_parts, _dedup_cluster, key=CLUSTER, shuffle=cfg.shuffle,
                            eps=cfg.eps, max_cluster_size=cfg.max_cluster_size, keep=list(cfg.keep), seed=int(ctx.seed))
