"""The two ends of every Ray Data job: load a shard's kept rows, write each stage's parts.

Both run as Ray tasks. The loader joins, by row id, the columns a job needs from the stages that
produced them (image bytes stay in the ingest parts and are never copied into later stages). The
writer splits a processed batch back into one part per stage and reports what it wrote; the
driver turns those reports into completion records.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.arrowutil import align
from curation.runner.store import RunStore
from curation.schema import ERROR, ID, INPUT_SHARD, REJECT, REJECT_STAGE


def load_rows(record_by_stage: dict[str, dict[str, Any]], base_stage: str,
              columns_by_stage: dict[str, list[str]]) -> pa.Table:
    """Kept rows of `base_stage` for one shard, with the requested columns of other stages."""
    base = RunStore.read_parts(record_by_stage[base_stage], [ID, INPUT_SHARD, REJECT])
    if base.num_rows == 0:
        return base
    base = base.filter(pc.is_null(base.column(REJECT))).drop_columns([REJECT])
    ids = base.column(ID)
    for stage, cols in columns_by_stage.items():
        if not cols:
            continue
        part = RunStore.read_parts(record_by_stage[stage], [ID, *cols])
        aligned = align(ids, part)
        for c in cols:
            base = base.append_column(c, aligned.column(c))
    return base


def load_task(batch: pa.Table, base_stage: str, columns_by_stage: dict[str, list[str]]) -> pa.Table:
    """map_batches(batch_size=1) over job items {"shard", "records" (JSON)}."""
    tables = []
    for records in batch.column("records").to_pylist():
        tables.append(load_rows(json.loads(records), base_stage, columns_by_stage))
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({ID: pa.array([], pa.string()), INPUT_SHARD: pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="default")


def stop_index(table: pa.Table, stages: list[str]) -> list[int]:
    """Per row, the index of the stage that rejected it, or len(stages) if it survived all."""
    if REJECT_STAGE not in table.column_names:
        return [len(stages)] * table.num_rows
    pos = {name: i for i, name in enumerate(stages)}
    rejects = table.column(REJECT).to_pylist() if REJECT in table.column_names else [None] * table.num_rows
    return [len(stages) if r is None else pos.get(s, len(stages))
            for r, s in zip(rejects, table.column(REJECT_STAGE).to_pylist())]


def write_task(batch: pa.Table, out: str, stages: list[str], produces: dict[str, list[str]]) -> pa.Table:
    """Write the parts of every stage of a job for the rows in `batch`; return what was written."""
    store = RunStore(out)
    if REJECT not in batch.column_names:
        batch = batch.append_column(REJECT, pa.nulls(batch.num_rows, pa.string()))
    if REJECT_STAGE not in batch.column_names:
        stage_col = pc.if_else(pc.is_null(batch.column(REJECT)), pa.scalar(None, pa.string()), pa.scalar(stages[0]))
        batch = batch.append_column(REJECT_STAGE, stage_col)
    if ERROR not in batch.column_names:
        batch = batch.append_column(ERROR, pa.nulls(batch.num_rows, pa.string()))
    stops = pa.array(stop_index(batch, stages), pa.int32())
    batch = batch.append_column("_stop", stops)
    results = []
    for shard in pc.unique(batch.column(INPUT_SHARD)).to_pylist():
        rows = batch.filter(pc.equal(batch.column(INPUT_SHARD), shard))
        for k, name in enumerate(stages):
            fed = rows.filter(pc.greater_equal(rows.column("_stop"), k))
            stopped_here = pc.equal(fed.column("_stop"), k)
            reject = pc.if_else(stopped_here, fed.column(REJECT), pa.scalar(None, pa.string()))
            part = fed.select([ID, INPUT_SHARD, *produces[name]])
            part = part.append_column(REJECT, reject)
            part = part.append_column(ERROR, pc.if_else(stopped_here, fed.column(ERROR), pa.scalar(None, pa.string())))
            counts = Counter(r for r in reject.to_pylist() if r is not None)
            name_written = store.write_part(name, shard, part) if fed.num_rows else ""
            results.append({"shard": shard, "stage": name, "part": name_written, "rows": fed.num_rows,
                            "kept": fed.num_rows - sum(counts.values()), "rejects": json.dumps(counts)})
    return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)


RESULT_SCHEMA = pa.schema([("shard", pa.string()), ("stage", pa.string()), ("part", pa.string()),
                          ("rows", pa.int64()), ("kept", pa.int64()), ("rejects", pa.string())])
