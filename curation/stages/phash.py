"""Global stage `phash`: exact duplicates by content hash, then perceptual near-duplicates.

Runs as four Ray Data steps (see curation/dedup/duplicate_graph.py for the algorithm):
  hash     map_batches over the images: a 64-bit pHash per image from a DCT-scaled decode. The
           hashes (plus the few columns dedup reads) are written to
           `ctx.cache_uri/hashes-<key>` keyed by `ctx.input_fingerprint`: a rerun with a new
           `max_distance` or keep policy reads ~60 bytes a row instead of decoding every image.
  band     map_batches: C(B, d) bucket rows per image + one content-hash row, `_part` = bucket mod P.
  group    groupby(_part).map_groups: exact and Hamming-verified pairs per bucket, reduced to
           star edges inside the partition. Partitions are independent, so this scales out with
           P; memory per worker is one partition (rows_per_partition band rows, ~70 B each).
  resolve  driver: union of the stars of the duplicates only (a fraction of the rows), keep
           policy per group, then a broadcast map or a hash join on `id` writes every row.
At 4B rows the shuffle is the cost: 35 band rows per image (docs/global_stages.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.config import StageConfig
from curation.dedup import cache
from curation.dedup.duplicate_graph import band_rows, partition_edges, resolve
from curation.dedup.hamming_bands import BandLayout, choose_num_blocks, make_layout
from curation.dedup.keep_policy import DEFAULT_KEEP, KeepPolicy
from curation.dedup.perceptual_hash import DEFAULT_DECODE_MIN_SIDE, phash_many
from curation.dedup.ray_ops import attach, by_partition, finalize
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage

HASH_VERSION = 1  # bump when the hash function changes: old caches then stop matching
OUTPUT = ("id", "input_shard", "phash", "dup_of", "reject")


@dataclass
class PhashConfig(StageConfig):
    max_distance: int = 4  # near duplicates: Hamming distance <= this between 64-bit pHashes
    keep: list[str] = field(default_factory=lambda: list(DEFAULT_KEEP))  # "-col" = higher wins
    decode_min_side: int = DEFAULT_DECODE_MIN_SIDE  # JPEG DCT-scaled decode, never below this
    num_blocks: int | None = None  # band blocks; None: fewest whose buckets hold <= bucket_rows
    # In a shuffle a band row costs ~70 bytes moved and a popcount ~1 ns, so the stage prefers
    # fewer tables with fuller buckets (4B rows: 7 blocks, 35 tables, ~30 rows a bucket) over
    # the single-machine choice (buckets < 1 row: 9 blocks, 126 tables).
    bucket_rows: float = 32.0
    partitions: int | None = None  # shuffle partitions; None = from rows_per_partition
    rows_per_partition: int = 8_000_000  # band rows per partition, ~70 B each: memory per worker
    broadcast_max_rows: int = 2_000_000  # duplicates lookup: broadcast below, hash join above
    shuffle: str = "auto"  # Ray shuffle of the groupby: auto | sort | push | hash (ray_ops.with_shuffle)


def upstream_columns(stage: Stage, columns: tuple[str, ...]) -> list[str]:
    """Those of `columns` that a stage before `stage` in this run's DAG produces: the keep policy
    ranks by `aesthetic` when the quality stage runs, and silently without it when it does not."""
    from curation.stages.dag import all_stages, producer_of

    run_stages = (stage.config.run.stages if stage.config is not None else None) or list(all_stages())
    before = run_stages[: run_stages.index(stage.name)] if stage.name in run_stages else run_stages
    return [c for c in columns if producer_of(c) in before]


# ~60 B a hashed row: ~12 MB files. One file per hash batch made 800 files at 200k rows, and
# reading their footers back took 15 s of a 176 s run (bench/bench_scale.py).
HASH_ROWS_PER_FILE = 200_000
BAND_ROWS_PER_BATCH = 1_000_000


def band_plan(n: int, cfg: PhashConfig, num_cpus: float) -> tuple[BandLayout, int]:
    """(band layout, shuffle partitions) for n hashed rows: what `run_global` uses, and what
    bench/bench_phash_scale.py replays in-process."""
    blocks = cfg.num_blocks or choose_num_blocks(n, cfg.max_distance, margin_bits=-math.log2(cfg.bucket_rows))
    layout = make_layout(cfg.max_distance, blocks)
    n_parts = cfg.partitions or max(int(num_cpus), math.ceil(n * (len(layout.tables) + 1) / cfg.rows_per_partition))
    return layout, n_parts


def _hash_batch(batch: pa.Table, decode_min_side: int, extra: list[str]) -> pa.Table:
    hashes, ok = phash_many(batch["image"].to_pylist(), decode_min_side)
    cols = {"id": batch["id"], "input_shard": batch["input_shard"], "phash": pa.array(hashes, pa.uint64()),
            "phash_ok": pa.array(ok), "content_hash": batch["content_hash"],
            "width": batch["width"], "height": batch["height"]}
    cols.update({c: batch[c] for c in extra if c in batch.column_names and c not in cols})
    return pa.table(cols)


def _bands_of_hashed(batch: pa.Table, **kw) -> pa.Table:
    return band_rows(batch.filter(batch["phash_ok"]), **kw)


def _output_batch(batch: pa.Table) -> pa.Table:
    failed = np.logical_not(batch["phash_ok"].to_numpy(zero_copy_only=False))
    reject = np.asarray(batch["reject"].to_pylist(), dtype=object)
    reject[failed & (reject == None)] = "phash_failed"
    phash = pa.array(batch["phash"].to_numpy(), pa.uint64(), mask=failed)
    out = batch.set_column(batch.column_names.index("phash"), "phash", phash)
    out = out.set_column(out.column_names.index("reject"), "reject", pa.array(reject.tolist(), pa.string()))
    return finalize(out, OUTPUT)


@register_stage
class PhashStage(Stage):
    name = "phash"
    kind = "global"
    requires = ("image", "content_hash", "width", "height")
    produces = ("phash", "dup_of")
    rejects = ("exact_duplicate", "near_duplicate", "phash_failed")
    resources = Resources(num_cpus=1, batch_size=256)
    Config = PhashConfig
    description = "64-bit pHash; exact (sha1) then near duplicates (Hamming <= max_distance), one kept per group"

    last_hash_cache_hit: bool | None = None  # for tests and logs: did the last run re-hash?

    @property
    def _cfg(self) -> PhashConfig:
        return self.params or PhashConfig()

    def optional_columns(self) -> tuple[str, ...]:
        """Keep-policy columns used when present (e.g. `aesthetic`), not required."""
        return tuple(c for c in KeepPolicy(tuple(self._cfg.keep)).columns()
                     if c not in self.requires and c != "id")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, *upstream_columns(self, self.optional_columns()))

    def check(self) -> None:
        cfg = self._cfg
        make_layout(cfg.max_distance, cfg.num_blocks or cfg.max_distance + 1)  # raises when invalid

    def hashes(self, ds, ctx):
        """The hashed rows, from the cache when this input was hashed before."""
        import ray.data

        cfg = self._cfg
        extra = list(self.optional_columns())
        name = "hashes-" + cache.cache_key(ctx.input_fingerprint, cfg.decode_min_side, HASH_VERSION, extra)
        uri = cache.join(ctx.cache_uri, name)
        fs, path = cache.resolve(uri)
        self.last_hash_cache_hit = cache.is_done(uri)
        if not self.last_hash_cache_hit:
            fs.delete_dir_contents(path, missing_dir_ok=True)  # leftovers of a crashed write
            res = self.effective_resources()
            ds.map_batches(_hash_batch, batch_format="pyarrow", batch_size=res.batch_size,
                           num_cpus=res.num_cpus, fn_kwargs={"decode_min_side": cfg.decode_min_side,
                                                             "extra": extra}
                           ).write_parquet(path, filesystem=fs, min_rows_per_file=HASH_ROWS_PER_FILE)
            cache.mark_done(uri)
            cache.prune(ctx.cache_uri, "hashes-", name)
        return ray.data.read_parquet(path, filesystem=fs)

    def run_global(self, ds, ctx):
        import ray

        cfg = self._cfg
        policy = KeepPolicy(tuple(cfg.keep))
        hashed = self.hashes(ds, ctx)
        names = hashed.schema().names
        attrs = [c for c in policy.columns() if c in names and c != "id"]
        layout, n_parts = band_plan(hashed.count(), cfg, ctx.num_cpus)
        # Each hashed row becomes (tables + 1) band rows, so a whole read block at once (the
        # default) was the run's largest task: 1344 MiB at 1M rows, 16 band rows per row and
        # HASH_ROWS_PER_FILE rows a block. BAND_ROWS_PER_BATCH band rows (~70 MB) a batch instead.
        bands = hashed.map_batches(_bands_of_hashed, batch_format="pyarrow",
                                   batch_size=max(1024, BAND_ROWS_PER_BATCH // (len(layout.tables) + 1)),
                                   fn_kwargs={"layout": layout, "n_partitions": n_parts, "attrs": attrs})
        edges = by_partition(bands, n_parts, partition_edges, shuffle=cfg.shuffle,
                             max_distance=cfg.max_distance, attrs=attrs, layout=layout)
        parts = [t for t in ray.get(edges.to_arrow_refs()) if t.num_rows]
        edge_table = pa.concat_tables(parts, promote_options="permissive") if parts else None
        lookup = resolve(edge_table, policy, attrs) if edge_table is not None else resolve(
            pa.table({"kind": pa.array([], pa.string())}), policy, attrs)
        joined = attach(hashed, lookup, cfg.broadcast_max_rows, n_parts)
        return joined.map_batches(_output_batch, batch_format="pyarrow")
