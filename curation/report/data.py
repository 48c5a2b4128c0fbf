"""What the report reads from a run folder: config, lineage, the ledger and the per-row columns.

Rows come from the stages' Parquet parts through `RunStore` (the completion records say which
parts are valid), one row per input row, with the stage that rejected it and why. On a large run
only an evenly spaced subset of input shards is read for plots and galleries; the funnel and the
reject counts always come from the ledger, which is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation.arrowutil import align, set_column
from curation.config import ConfigError
from curation.io import fs
from curation.io.inputs import InputError
from curation.runner.ledger import summarize
from curation.runner.run_folder import load_plan
from curation.runner.store import RunStore
from curation.schema import ID, INPUT_SHARD, REJECT, REJECT_STAGE

# The per-row columns the report plots or groups by; image bytes are read later, only for thumbnails.
REPORT_COLUMNS = ("source", "width", "height", "max_person_short_side", "num_persons", "head_yaw", "head_pitch",
                  "aesthetic", "realism", "text_area", "dup_of", "semdup_of", "cluster_l1", "selected")


@dataclass
class RunData:
    run_dir: str
    stages: list[str]  # this run's DAG (run.stages), in order
    config: dict[str, Any]
    config_text: str
    run_info: dict[str, Any]
    ledger: dict[str, Any]
    manifest: dict[str, Any] | None
    rows: pa.Table  # id, input_shard, reject, reject_stage + the REPORT_COLUMNS that exist in this run
    shards_read: int
    shards_total: int

    def has(self, column: str) -> bool:
        return column in self.rows.column_names and self.rows.column(column).null_count < self.rows.num_rows

    def values(self, column: str, kept: bool | None = None) -> list:
        """Non-null values of a column; kept=True/False restricts to kept or rejected rows."""
        if column not in self.rows.column_names:
            return []
        col = self.rows.column(column)
        mask = pc.is_valid(col)
        if kept is not None:
            is_kept = pc.is_null(self.rows.column(REJECT))
            mask = pc.and_(mask, is_kept if kept else pc.invert(is_kept))
        return col.filter(mask).to_pylist()


def run_stages(config: dict[str, Any]) -> list[str]:
    from curation.stages.dag import all_stages

    return list((config.get("run") or {}).get("stages") or all_stages())


def open_run(run_dir: str) -> tuple[RunStore, dict[str, Any], str]:
    """The run's store and resolved config; a folder that is not a run is a user mistake."""
    if not fs.exists(fs.join(run_dir, "run.json")):
        raise InputError(f"not a run folder (no run.json): {run_dir}; give the --output folder of `curate run`")
    text = fs.read_bytes(fs.join(run_dir, "config.yaml")).decode()
    return RunStore(run_dir), yaml.safe_load(text) or {}, text


def pick_shards(plan: list[str], limit: int) -> list[str]:
    """An evenly spaced, deterministic subset: the same report for the same run."""
    if len(plan) <= limit:
        return list(plan)
    step = len(plan) / limit
    return [plan[int(i * step)] for i in range(limit)]


def _read_stage(store: RunStore, stage: str, shards: list[str], columns: list[str]) -> pa.Table | None:
    records = store.done_records(stage)
    tables = [RunStore.read_parts(records[sh], [ID, REJECT, *columns])
              for sh in shards if sh in records and records[sh]["parts"]]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def load_rows(store: RunStore, stages: list[str], shards: list[str]) -> pa.Table:
    """One row per input row of `shards`, joined by id across the stages' parts."""
    from curation.stages.dag import all_stages

    registry = all_stages()
    base = _read_stage(store, "ingest", shards, [INPUT_SHARD, "source"])
    if base is None:
        return pa.table({ID: pa.array([], pa.string()), REJECT: pa.array([], pa.string()),
                         REJECT_STAGE: pa.array([], pa.string())})
    base = base.append_column(REJECT_STAGE, pc.if_else(pc.is_valid(base.column(REJECT)), pa.scalar("ingest"),
                                                       pa.scalar(None, pa.string())))
    ids = base.column(ID)
    for stage in stages:
        if stage in ("ingest", "shard") or stage not in registry:
            continue
        wanted = [c for c in REPORT_COLUMNS if c in registry[stage].produces]
        part = _read_stage(store, stage, shards, wanted)
        if part is None:
            continue
        aligned = align(ids, part)  # rows a stage never saw (rejected earlier) come back null
        for c in wanted:
            base = set_column(base, c, aligned.column(c))
        stage_reject = aligned.column(REJECT)
        base = set_column(base, REJECT_STAGE, pc.if_else(pc.is_valid(stage_reject), pa.scalar(stage),
                                                         base.column(REJECT_STAGE)))
        base = set_column(base, REJECT, pc.coalesce(base.column(REJECT), stage_reject))
    return base


def load_run(run_dir: str, max_shards: int = 200) -> RunData:
    store, config, config_text = open_run(run_dir)
    stages = run_stages(config)
    try:
        plan = [s["shard"] for s in load_plan(store)]
    except ConfigError as exc:
        raise InputError(f"{run_dir}: {exc}") from None
    shards = pick_shards(plan, max_shards)
    manifest_uri = store.uri("shards", "manifest.json")
    return RunData(run_dir=run_dir, stages=stages, config=config, config_text=config_text,
                   run_info=store.read_run_info() or {}, ledger=summarize(store, stages),
                   manifest=fs.read_json(manifest_uri) if fs.exists(manifest_uri) else None,
                   rows=load_rows(store, stages, shards), shards_read=len(shards), shards_total=len(plan))


def load_images(run_dir: str, ids: list[str]) -> dict[str, bytes]:
    """Encoded bytes of `ids`, read from the ingest parts of only the shards that hold them."""
    store = RunStore(run_dir)
    wanted = set(ids)
    shards = sorted({i.rsplit("-", 1)[0] for i in wanted})  # ids are "<input_shard>-<index>" (schema.py)
    records = store.done_records("ingest")
    images: dict[str, bytes] = {}
    for sh in shards:
        if sh not in records or not records[sh]["parts"]:
            continue
        t = RunStore.read_parts(records[sh], [ID, "image"])
        for row_id, data in zip(t.column(ID).to_pylist(), t.column("image").to_pylist()):
            if row_id in wanted and data:
                images[row_id] = data
    return images
