"""Global stage `sample`: balanced sampling down the cluster hierarchy to a target size
(Vo et al. 2024); algorithm in curation/clustering/balanced_sampling.py.

It reads only the columns `cluster` wrote (ids per level, distance to the level-1 centroid),
never the embeddings: a new target re-runs this stage alone, in seconds, without re-clustering.

Ray Data steps:
  sizes     groupby(cluster_l1..lL).count(): one row per level-1 cluster (a hash aggregate; its
            output is k1 rows, ~10M at 4B input).
  allocate  driver: capping rule from the top level down to the level-1 clusters (k1 numbers).
  select    groupby(cluster_l1).map_groups: inside each level-1 cluster, random (seeded per
            cluster) or closest-to-centroid picks, repeats up to `multiplier`. Memory per call
            is one level-1 cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.clustering.balanced_sampling import allocate, cluster_rng, select_in_cluster
from curation.config import ConfigError, StageConfig
from curation.dedup.ray_ops import by_partition, columns_of, finalize, with_shuffle
from curation.stages.base import Resources, Stage
from curation.stages.cluster import LEVEL_COLUMNS, ClusterConfig
from curation.stages.registry import register_stage

OUTPUT = ("id", "input_shard", "selected", "reject")


@dataclass
class SampleConfig(StageConfig):
    target: int | None = None  # rows to select (counting repeats); None: target_fraction
    target_fraction: float = 0.25  # of the rows reaching this stage (Humans-1B: ~4B -> ~1B)
    strategy: str = "random"  # inside a level-1 cluster: "random" or "closest" (to its centroid)
    multiplier: int = 1  # a cluster may give up to multiplier x its size (repeats)
    shuffle: str = "auto"  # Ray shuffle of the groupby: auto | sort | push | hash (ray_ops.with_shuffle)


def _select(rows: pa.Table, clusters: np.ndarray, quota: np.ndarray, strategy: str, multiplier: int,
            seed: int) -> pa.Table:
    rows = rows.sort_by("id")  # the draw must not depend on shuffle order
    cluster = rows["cluster_l1"][0].as_py()
    selected = np.zeros(rows.num_rows, dtype=np.int32)
    if cluster is not None:
        pos = np.searchsorted(clusters, cluster)
        dist = rows["cluster_distance"].to_numpy(zero_copy_only=False) if strategy == "closest" else None
        selected = select_in_cluster(int(quota[pos]), rows.num_rows, multiplier, strategy, dist,
                                     cluster_rng(seed, cluster))
    reject = pa.array(np.where(selected == 0, "not_selected", None).tolist(), pa.string())
    out = rows.select(["id", "input_shard"]).append_column("selected", pa.array(selected, pa.int32()))
    return finalize(out.append_column("reject", reject), OUTPUT)


@register_stage
class SampleStage(Stage):
    name = "sample"
    kind = "global"
    requires = (*LEVEL_COLUMNS, "cluster_distance")
    produces = ("selected",)
    rejects = ("not_selected",)
    resources = Resources(num_cpus=1)
    Config = SampleConfig
    description = "balanced sampling down the cluster hierarchy to a target size (capping rule)"

    @property
    def _cfg(self) -> SampleConfig:
        return self.params or SampleConfig()

    def n_levels(self) -> int:
        cluster_cfg = (self.config.stages or {}).get("cluster") if self.config else None
        return len((cluster_cfg or ClusterConfig()).k)

    def required_columns(self) -> tuple[str, ...]:
        return (*LEVEL_COLUMNS[: self.n_levels()], "cluster_distance")

    def check(self) -> None:
        cfg = self._cfg
        if cfg.strategy not in ("random", "closest"):
            raise ConfigError(f"sample.strategy: 'random' or 'closest', not {cfg.strategy!r}")
        if cfg.multiplier < 1:
            raise ConfigError(f"sample.multiplier must be >= 1, got {cfg.multiplier}")

    def allocation(self, ds, seed: int, cluster_cpus: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
        """(level-1 cluster ids sorted, target per level-1 cluster, rows counted)."""
        levels = list(LEVEL_COLUMNS[: self.n_levels()])
        # k1 output rows; the cluster's size stands in for the input's (not counted yet)
        counted = with_shuffle(ds, self._cfg.shuffle, cluster_cpus).groupby(levels).count()
        sizes = pa.Table.from_pandas(counted.to_pandas(), preserve_index=False)
        sizes = sizes.filter(pc.is_valid(sizes["cluster_l1"])).sort_by("cluster_l1")
        paths = np.stack([sizes[c].to_numpy() for c in levels], axis=1)
        counts = sizes["count()"].to_numpy()
        cfg = self._cfg
        target = cfg.target if cfg.target is not None else math.floor(cfg.target_fraction * int(counts.sum()))
        return paths[:, 0], allocate(paths, counts, target, cfg.multiplier, seed), int(counts.sum())

    def run_global(self, ds, ctx):
        self.check()
        cfg = self._cfg
        ds = columns_of(ds, ["id", "input_shard", *self.required_columns()])
        clusters, quota, n = self.allocation(ds, int(ctx.seed), int(ctx.num_cpus))
        # whole level-1 clusters per call; ~1M rows of (ids, distance) per shuffle partition
        n_parts = max(int(ctx.num_cpus), math.ceil(n / 1_000_000))
        return by_partition(ds, n_parts, _select, key="cluster_l1", shuffle=cfg.shuffle,
                            clusters=clusters, quota=quota,
                            strategy=cfg.strategy, multiplier=cfg.multiplier, seed=int(ctx.seed))
