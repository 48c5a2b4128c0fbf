"""The layout of a run folder, and the only code that reads or writes it.

OUT/
  config.yaml                     resolved config of the latest run
  run.json                        input, upstream run (for --stage runs), code version, config hash
  ingest/plan.json                the input shards: stable ids and what each one reads
  <stage>/parts/<shard>/*.parquet the stage's columns for the rows it was given
  <stage>/done/<shard>.json       completion record: fingerprint, in, kept, rejects, part files
  <stage>/cache/                  reusable intermediates of global stages
  ledger.json                     counts and reasons, summed over the completion records
  shards/*.tar, manifest.json     the product

Only part files named in a completion record are ever read, so files from a crashed attempt
are inert (and are deleted before the shard is redone).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.io import fs
from curation.schema import ID


class RunStore:
    def __init__(self, out: str):
        self.out = out.rstrip("/")
        self._upstream: RunStore | None = None
        self._upstream_loaded = False

    # -- paths ---------------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        return fs.join(self.out, *parts)

    def done_uri(self, stage: str, shard: str) -> str:
        return self.uri(stage, "done", f"{shard}.json")

    def part_dir(self, stage: str, shard: str) -> str:
        return self.uri(stage, "parts", shard)

    # -- lineage for `curate run --stage X --input PREV --output OUT` ---------------------------
    @property
    def upstream(self) -> RunStore | None:
        if not self._upstream_loaded:
            self._upstream_loaded = True
            run = self.read_run_info()
            if run and run.get("upstream"):
                self._upstream = RunStore(run["upstream"])
        return self._upstream

    def read_run_info(self) -> dict[str, Any] | None:
        uri = self.uri("run.json")
        return fs.read_json(uri) if fs.exists(uri) else None

    def holder_of(self, stage: str) -> RunStore | None:
        """This run, or the nearest upstream run, that has completion records for `stage`."""
        store: RunStore | None = self
        while store is not None:
            if fs.list_files(store.uri(stage, "done")):
                return store
            store = store.upstream
        return None

    # -- completion records --------------------------------------------------------------------
    def done_records(self, stage: str) -> dict[str, dict[str, Any]]:
        holder = self.holder_of(stage)
        if holder is None:
            return {}
        out = {}
        for uri in holder.list_done(stage):
            rec = fs.read_json(uri)
            rec["_root"] = holder.out
            out[rec["shard"]] = rec
        return out

    def list_done(self, stage: str) -> list[str]:
        return [u for u in fs.list_files(self.uri(stage, "done")) if u.endswith(".json")]

    def write_done(self, stage: str, shard: str, record: dict[str, Any]) -> None:
        fs.write_json(self.done_uri(stage, shard), {**record, "stage": stage, "shard": shard})

    def clear_shard(self, stage: str, shard: str) -> None:
        fs.delete_file(self.done_uri(stage, shard))
        fs.delete_dir(self.part_dir(stage, shard))

    # -- parts ---------------------------------------------------------------------------------
    def write_part(self, stage: str, shard: str, table: pa.Table) -> str:
        name = f"{uuid.uuid4().hex[:12]}.parquet"
        with fs.atomic_output(fs.join(self.part_dir(stage, shard), name)) as f:
            pq.write_table(table, f, **parquet_options(table))
        return name

    @contextmanager
    def part_writer(self, stage: str, shard: str) -> Iterator[PartWriter]:
        """A part written table by table as it is produced (one open file, whole or absent)."""
        name = f"{uuid.uuid4().hex[:12]}.parquet"
        with fs.atomic_output(fs.join(self.part_dir(stage, shard), name)) as f:
            writer = PartWriter(name, f)
            yield writer
            writer.close()

    @staticmethod
    def read_parts(record: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
        """The rows a completion record vouches for, sorted by id."""
        root, stage, shard = record["_root"], record["stage"], record["shard"]
        tables = []
        for name in record["parts"]:
            uri = fs.join(root, stage, "parts", shard, name)
            f, path = fs.resolve(uri)
            with f.open_input_file(path) as fh:
                tables.append(pq.read_table(fh, columns=columns))
        if not tables:
            return pa.table({})
        t = pa.concat_tables(tables, promote_options="default")
        return t.sort_by(ID) if ID in t.column_names and t.num_rows else t


class PartWriter:
    def __init__(self, name: str, sink: Any):
        self.name, self.sink, self.writer = name, sink, None

    def write(self, table: pa.Table) -> None:
        opts = parquet_options(table)
        row_group_size = opts.pop("row_group_size", None)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.sink, table.schema, **opts)
        self.writer.write_table(table, row_group_size=row_group_size)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def parquet_options(table: pa.Table) -> dict[str, Any]:
    """Image bytes (JPEGs, already compressed) are written as they are: no compression, no
    dictionary attempt and no min/max statistics over ~0.5 MB values, in row groups of 64 rows.
    Each of those defaults cost more than the write itself (5 ms an image at 470 KB, against
    0.4 ms; docs/benchmarks.md). Other parts are small columns: zstd."""
    if "image" not in table.column_names:
        return {"compression": "zstd"}
    small = [c for c in table.column_names if c != "image"]
    return {"compression": "none", "use_dictionary": small, "write_statistics": small, "row_group_size": 64}
