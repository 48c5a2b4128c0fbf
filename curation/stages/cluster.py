"""Global stage `cluster`: hierarchical k-means of the CLIP embeddings (Vo et al. 2024);
algorithm in curation/clustering/hierarchical_kmeans.py.

Ray Data steps:
  fit     driver: the hierarchy is fitted on a uniform sample of at most `fit_sample_size`
          embeddings (level 1 then sees k * fit_points_per_centroid of them per Lloyd run, the
          upper levels only centroids). The centroids of every level and the parent map are
          cached in `ctx.cache_uri` keyed by `ctx.input_fingerprint` and the cluster config: a
          rerun of this stage, or of `sample` with a new target (which reads only the columns
          written here), never refits. GPU faiss when present.
  assign  map_batches: nearest level-1 centroid of every row (chunked; the fit's `precision`), then the
          parent map gives levels 2..L; also writes `cluster_distance` for closest-to-centroid
          sampling. Embarrassingly parallel: time per row = k1 x D flops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.clustering import dense_ops
from curation.clustering.arrow_vectors import vectors
from curation.clustering.hierarchical_kmeans import Hierarchy, Level, hierarchical_kmeans
from curation.config import ConfigError, StageConfig
from curation.dedup import cache
from curation.dedup.ray_ops import columns_of, finalize
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage

MAX_LEVELS = 4  # schema.py declares cluster_l1 .. cluster_l4
LEVEL_COLUMNS = tuple(f"cluster_l{i}" for i in range(1, MAX_LEVELS + 1))
OUTPUT = ("id", "input_shard", *LEVEL_COLUMNS, "cluster_distance", "reject")


@dataclass
class ClusterConfig(StageConfig):
    # per level, bottom first; Vo et al. use ~half the mean cluster size as sample_size and
    # skip resampling at level 1, where a step costs a full pass over the data
    k: list[int] = field(default_factory=lambda: [20000, 2000, 200])
    n_resampling_steps: list[int] = field(default_factory=lambda: [0, 10, 10])
    sample_size: list[int] = field(default_factory=lambda: [1, 5, 3])
    n_iter: int = 20
    resample_strategy: str = "closest"  # or "random"
    normalize: bool = True  # L2-normalise embeddings (CLIP compares by angle)
    fit_sample_size: int = 2_000_000  # rows the hierarchy is fitted on; all rows are assigned
    init_points_per_centroid: int = 4  # k-means++ seeding subsample (greedy seeding, 2 + ln k trials)
    fit_points_per_centroid: int = 32  # Lloyd subsample (docs/global_stages.md: 128 costs 1.5x, same balance)
    # distance products of the fit: "auto" = bfloat16 on a GPU or an AMX CPU, else float32
    precision: str = "auto"
    # levels 2+: a cluster takes at most this x the mean number of children (0 = plain nearest)
    upper_capacity: float = 1.2


def _assign(batch: pa.Table, centroids: np.ndarray, parents: list[np.ndarray], normalize: bool,
            precision: str = "float32") -> pa.Table:
    x, valid = vectors(batch["clip"])
    cols = {"id": batch["id"], "input_shard": batch["input_shard"]}
    ids = np.zeros((batch.num_rows, MAX_LEVELS), dtype=np.int32)
    dist = np.zeros(batch.num_rows, dtype=np.float32)
    if valid.any():
        level1, dist[valid] = dense_ops.nearest_rows(x[valid], centroids, precision, normalize=normalize)
        lifted = Hierarchy([centroids], parents, level1, dist[valid]).lift(level1)
        ids[valid, : lifted.shape[1]] = lifted
    for level, name in enumerate(LEVEL_COLUMNS):
        cols[name] = pa.array(ids[:, level], pa.int32(), mask=~valid | (level > len(parents)))
    cols["cluster_distance"] = pa.array(dist, pa.float32(), mask=~valid)
    return finalize(pa.table(cols), OUTPUT)


@register_stage
class ClusterStage(Stage):
    name = "cluster"
    kind = "global"
    requires = ("clip",)
    produces = (*LEVEL_COLUMNS, "cluster_distance")
    rejects = ()
    resources = Resources(num_cpus=1, batch_size=8192)
    Config = ClusterConfig
    description = "hierarchical k-means (Vo et al. 2024) with resampling; cluster id per level"

    last_fit_cache_hit: bool | None = None

    @property
    def _cfg(self) -> ClusterConfig:
        return self.params or ClusterConfig()

    def levels(self) -> list[Level]:
        cfg = self._cfg
        return [Level(k, r, s) for k, r, s in zip(cfg.k, cfg.n_resampling_steps, cfg.sample_size)]

    def check(self) -> None:
        cfg = self._cfg
        if not 1 <= len(cfg.k) <= MAX_LEVELS:
            raise ConfigError(f"cluster.k: 1 to {MAX_LEVELS} levels (schema has cluster_l1..l{MAX_LEVELS}), "
                              f"got {cfg.k}")
        if not len(cfg.k) == len(cfg.n_resampling_steps) == len(cfg.sample_size):
            raise ConfigError("cluster.k, cluster.n_resampling_steps and cluster.sample_size need one entry per level")
        if cfg.resample_strategy not in ("closest", "random"):
            raise ConfigError(f"cluster.resample_strategy: 'closest' or 'random', not {cfg.resample_strategy!r}")
        if cfg.precision not in dense_ops.PRECISIONS:
            raise ConfigError(f"cluster.precision: one of {dense_ops.PRECISIONS}, not {cfg.precision!r}")

    def hierarchy(self, ds, ctx, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(level-1 centroids, parent maps), fitted or from the cache."""
        cfg = self._cfg
        # "greedy-kmeans++": hierarchies fitted before the seeding changed must not be reused
        params = ["greedy-kmeans++", cfg.k, cfg.n_resampling_steps, cfg.sample_size, cfg.n_iter, cfg.resample_strategy,
                  cfg.normalize, cfg.fit_sample_size, cfg.init_points_per_centroid, cfg.fit_points_per_centroid,
                  dense_ops.resolve(cfg.precision), cfg.upper_capacity]  # resolved: "auto" differs by hardware
        name = "hierarchy-" + cache.cache_key(ctx.input_fingerprint, params, ctx.seed)
        uri = cache.join(ctx.cache_uri, name)
        stored = cache.load_arrays(uri)
        self.last_fit_cache_hit = stored is not None
        if stored is None:
            sample = columns_of(ds, ["clip"])
            if cfg.fit_sample_size < n:
                sample = sample.random_sample(1.1 * cfg.fit_sample_size / n, seed=ctx.seed)
            batches = sample.iter_batches(batch_format="pyarrow")
            x = np.concatenate([v[m] for v, m in (vectors(b["clip"]) for b in batches)])
            h = hierarchical_kmeans(x, self.levels(), cfg.n_iter, ctx.seed, cfg.resample_strategy, cfg.normalize,
                                    init_points_per_centroid=cfg.init_points_per_centroid,
                                    fit_points_per_centroid=cfg.fit_points_per_centroid, precision=cfg.precision,
                                    upper_capacity=cfg.upper_capacity)
            stored = {f"centroids_l{i + 1}": c for i, c in enumerate(h.centroids)}
            stored.update({f"parents_l{i + 1}": p for i, p in enumerate(h.parents)})
            cache.save_arrays(uri, stored, {"levels": [len(c) for c in h.centroids], "fitted_on": len(x), **h.stats})
            cache.prune(ctx.cache_uri, "hierarchy-", name)
        n_levels = sum(1 for key in stored if key.startswith("centroids_l"))
        return stored["centroids_l1"], [stored[f"parents_l{i}"] for i in range(1, n_levels)]

    def run_global(self, ds, ctx):
        self.check()
        n = ds.count()
        if n == 0:
            return ds.map_batches(lambda t: finalize(t, OUTPUT), batch_format="pyarrow")
        centroids, parents = self.hierarchy(ds, ctx, n)
        return ds.map_batches(_assign, batch_format="pyarrow", batch_size=self.effective_resources().batch_size,
                              fn_kwargs={"centroids": centroids, "parents": parents, "normalize": self._cfg.normalize,
                                         "precision": self._cfg.precision})
