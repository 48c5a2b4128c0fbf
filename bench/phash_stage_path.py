"""The `phash` stage's own dedup path, timed in-process (used by bench_phash_scale.py).

PhashStage.run_global runs: `_bands_of_hashed` (band_rows) per block -> a Ray groupby shuffle by
`_part` -> `partition_edges` per partition -> `resolve` on the driver. Here the same functions
run in one process over rows shaped like the stage's hash cache (id, input_shard, phash,
phash_ok, content_hash, width, height). Ray's shuffle is replaced by an in-process stand-in:
each band batch is sorted by `_part` and appended to one Arrow IPC file per partition (so 10M
images, 160M band rows, never sit in memory at once), and each partition is read back whole.
The stand-in is timed but is not the stage's code; Ray's shuffle would cost more than it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.dedup.duplicate_graph import partition_edges, resolve
from curation.dedup.keep_policy import KeepPolicy
from curation.stages.phash import PhashConfig, _bands_of_hashed, band_plan

PHASES = ("band", "split (stand-in)", "read (stand-in)", "partition_edges", "resolve")
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_strings(raw: np.ndarray) -> pa.Array:
    """(n, k) uint8 -> n hex strings of 2k chars, built as one Arrow buffer (no Python strings)."""
    n, k = raw.shape
    chars = np.empty((n, 2 * k), dtype=np.uint8)
    chars[:, 0::2], chars[:, 1::2] = HEX[raw >> 4], HEX[raw & 15]
    offsets = pa.py_buffer(np.arange(0, 2 * k * n + 1, 2 * k, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(chars.tobytes()))


def hashed_table(hashes: np.ndarray, content_of: np.ndarray, seed: int = 0) -> pa.Table:
    """Rows as `PhashStage.hashes` returns them. ids are the row numbers as decimal strings
    (<= 8 chars: compact); `content_of[i]` = the row whose bytes row i has (exact copies share a
    sha1); sizes are random so that the keep policy has something to rank."""
    rng = np.random.default_rng(seed)
    n = len(hashes)
    raw = rng.integers(0, 256, (n, 20), dtype=np.uint8)[content_of]
    ids = pa.array(np.arange(n)).cast(pa.string())
    width = rng.integers(200, 2000, n).astype(np.int32)[content_of]
    height = rng.integers(200, 2000, n).astype(np.int32)[content_of]
    return pa.table({"id": ids, "input_shard": pa.array(np.zeros(n, np.int32)).cast(pa.string()),
                     "phash": pa.array(hashes, pa.uint64()), "phash_ok": pa.array(np.ones(n, bool)),
                     "content_hash": hex_strings(raw), "width": width, "height": height})


@dataclass
class StageRun:
    n: int
    blocks: int
    tables: int
    partitions: int
    band_rows: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))  # wall
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    max_partition_rows: int = 0
    edges: int = 0
    lookup: pa.Table | None = None

    def add(self, phase: str, wall0: float, cpu0: float) -> None:
        self.seconds[phase] += time.perf_counter() - wall0
        self.cpu_seconds[phase] += time.process_time() - cpu0

    def stage_seconds(self, cpu: bool = False) -> float:
        """Time in the stage's own functions (band_rows, partition_edges, resolve)."""
        return sum(v for k, v in (self.cpu_seconds if cpu else self.seconds).items() if "stand-in" not in k)


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run_stage_path(hashed: pa.Table, cfg: PhashConfig, num_cpus: int, batch_rows: int,
                   spill_dir: str | None = None) -> StageRun:
    """The stage's band -> (shuffle stand-in) -> partition_edges -> resolve over `hashed`."""
    policy = KeepPolicy(tuple(cfg.keep))
    attrs = [c for c in policy.columns() if c in hashed.column_names and c != "id"]  # as run_global
    layout, n_parts = band_plan(hashed.num_rows, cfg, num_cpus)
    run = StageRun(hashed.num_rows, len(layout.blocks), len(layout.tables), n_parts)
    tmp = tempfile.mkdtemp(prefix="phash-parts-", dir=spill_dir)
    try:
        writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * n_parts
        for start in range(0, hashed.num_rows, batch_rows):
            t0 = _now()
            bands = _bands_of_hashed(hashed.slice(start, batch_rows), layout=layout, n_partitions=n_parts, attrs=attrs)
            run.add("band", *t0)
            t1 = _now()
            part = bands["_part"].to_numpy()
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
            bands = bands.take(order)
            for p in range(n_parts):
                if bounds[p + 1] > bounds[p]:
                    if writers[p] is None:
                        writers[p] = pa.ipc.new_file(os.path.join(tmp, f"{p}.arrow"), bands.schema)
                    writers[p].write_table(bands.slice(bounds[p], bounds[p + 1] - bounds[p]))
            run.band_rows += bands.num_rows
            run.add("split (stand-in)", *t1)
        for w in writers:
            if w is not None:
                w.close()
        edge_parts = []
        for p, w in enumerate(writers):
            if w is None:
                continue
            t0 = _now()
            path = os.path.join(tmp, f"{p}.arrow")
            rows = pa.ipc.open_file(pa.memory_map(path)).read_all()
            run.add("read (stand-in)", *t0)
            t1 = _now()
            edges = partition_edges(rows, max_distance=cfg.max_distance, attrs=attrs, layout=layout)
            run.add("partition_edges", *t1)
            run.max_partition_rows = max(run.max_partition_rows, rows.num_rows)
            del rows
            os.remove(path)
            if edges.num_rows:
                edge_parts.append(edges)
        t0 = _now()
        edge_table = pa.concat_tables(edge_parts, promote_options="permissive")
        run.edges = edge_table.num_rows
        run.lookup = resolve(edge_table, policy, attrs)
        run.add("resolve", *t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run


def group_labels(n: int, lookup: pa.Table) -> np.ndarray:
    """Row -> the row its group keeps, from resolve's (id, dup_of) for the duplicates (ids are
    row numbers). An exact copy points at its exact keeper, which may itself be a near
    duplicate: two hops reach the kept row."""
    labels = np.arange(n)
    ids = lookup["id"].cast(pa.int64()).to_numpy()
    labels[ids] = lookup["dup_of"].cast(pa.int64()).to_numpy()
    return labels[labels[labels]]


def same_groups(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings partition the rows identically (label names aside)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    pairs = len(np.unique(a * (int(b.max(initial=0)) + 1) + b))  # labels < n: no overflow below 3e9 rows
    return pairs == len(np.unique(a)) == len(np.unique(b))
