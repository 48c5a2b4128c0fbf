"""Ray Data patterns shared by the global stages.

- `by_partition`: run a vectorised function over whole key-partitions. Ray's `map_groups` calls
  Python once per group; with billions of tiny groups (hash buckets, content hashes) that call is
  the bottleneck, so rows carry a coarse `_part` key (bucket mod P) and the function receives all
  rows of one partition and groups them itself with numpy.
- `attach`: add the columns of a small-or-large lookup table (keyed by `id`) to every row. Up to
  `broadcast_max_rows` the table rides along with the map function (one copy per worker, no
  shuffle); above it, a hash join on `id` (a shuffle, but no single machine holds the table).
- `finalize`: select and cast the output columns to their declared `schema.py` types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import arrow_type

PART = "_part"


def _select(batch: pa.Table, columns: list[str]) -> pa.Table:
    return batch.select(columns)


def columns_of(ds: Any, columns: list[str]) -> Any:
    """Just these columns. Not `ds.select_columns`: the runner feeds a shard with no kept rows as
    an empty block without the stage's columns, which a projection rejects while map_batches
    skips empty blocks."""
    return ds.map_batches(_select, batch_format="pyarrow", fn_kwargs={"columns": columns})


def part_of(keys: np.ndarray, n_partitions: int) -> np.ndarray:
    """Partition of uint64 keys; multiplying by an odd constant mixes high bits into low ones so
    that keys sharing low bits (e.g. one table's id bits) still spread over partitions."""
    mixed = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(max(1, n_partitions))).astype(np.int64)


SHUFFLES = ("auto", "sort", "push", "hash")
SORT_SHUFFLE_MAX_PARTITIONS = 64


def with_shuffle(ds: Any, shuffle: str, n_partitions: int = 1) -> Any:
    """Pick the shuffle of this dataset's groupbys (its own DataContext copy, nothing global).

    "sort": Ray's task-based sort shuffle (map tasks range-partition, reduce tasks merge). No
    long-lived actors, so it never holds CPUs that reads need (ENV.md's 2-core hang), and on small
    inputs a groupby costs ~0.3 s instead of the ~9 s of aggregator-actor start-up measured here.
    But every map task writes one block per partition: M x N objects, hopeless at thousands of
    partitions.
    "push": Ray's push-based sort shuffle (merges while mapping; its choice for 100 TB sorts).
    "hash": Ray's default in the version we pin, an actor-based hash shuffle: streaming aggregation, no M x N blocks;
    what billions of rows need.
    "auto": "sort" up to SORT_SHUFFLE_MAX_PARTITIONS partitions, "hash" above.
    """
    from ray.data.context import ShuffleStrategy

    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, not {shuffle!r}")
    if shuffle == "auto":
        shuffle = "sort" if n_partitions <= SORT_SHUFFLE_MAX_PARTITIONS else "hash"
    ds.context.shuffle_strategy = {"sort": ShuffleStrategy.SORT_SHUFFLE_PULL_BASED,
                                   "push": ShuffleStrategy.SORT_SHUFFLE_PUSH_BASED,
                                   "hash": ShuffleStrategy.SHUFFLE_V2}[shuffle]
    return ds


def by_partition(ds: Any, n_partitions: int, fn: Callable[..., pa.Table], key: str | list[str] = PART,
                 shuffle: str = "auto", **fn_kwargs: Any) -> Any:
    """`fn(rows_of_one_key, **fn_kwargs) -> table` over a dataset, grouped by `key` (default
    `_part`; a list of columns groups by their combination) into `n_partitions` shuffle
    partitions."""
    return with_shuffle(ds, shuffle, n_partitions).groupby(key, num_partitions=max(1, n_partitions)).map_groups(
        fn, batch_format="pyarrow", fn_kwargs=fn_kwargs)


def _attach_batch(batch: pa.Table, lookup: pa.Table) -> pa.Table:
    lookup = lookup.cast(pa.schema([f.with_type(batch.schema.field("id").type) if f.name == "id" else f
                                    for f in lookup.schema]))
    return batch.join(lookup, keys="id", join_type="left outer")


def attach(ds: Any, lookup: pa.Table, broadcast_max_rows: int, n_partitions: int) -> Any:
    """Left-join `lookup` (an `id` column + new columns) onto every row of `ds`."""
    if lookup.num_rows <= broadcast_max_rows:
        return ds.map_batches(_attach_batch, batch_format="pyarrow", fn_kwargs={"lookup": lookup})
    import ray.data

    right = ray.data.from_arrow(lookup)
    return ds.join(right, join_type="left_outer", num_partitions=max(1, n_partitions), on=("id",))


def finalize(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """The stage's output columns with their declared types; absent columns become nulls."""
    arrays = []
    for name in columns:
        tp = arrow_type(name)
        if name in table.column_names:
            arrays.append(pc.cast(table[name], tp))
        else:
            arrays.append(pa.nulls(table.num_rows, tp))
    return pa.Table.from_arrays(arrays, names=list(columns))
