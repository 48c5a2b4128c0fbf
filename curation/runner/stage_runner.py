"""Runs one map stage on a Ray Data batch: skip rejected rows, isolate failures, early filter.

This is the callable handed to `map_batches`. It is built on the worker (so the stage's model
loads once per actor in `setup()`), sees whole batches of a fused segment, and never loses a row:
a batch that raises is retried once and then bisected until the bad rows are found; each bad row
becomes a reject `error:<stage>` with its message in `error`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.arrowutil import null_column, set_column, to_array
from curation.config import Config
from curation.schema import ERROR, REJECT, REJECT_STAGE
from curation.stages.filters import FilterRule, apply_rules

log = logging.getLogger(__name__)


class StageRunner:
    def __init__(self, stage_cls: type, config: Config, rules: list[FilterRule], num_threads: int):
        self.stage = stage_cls(config)
        self.rules = rules
        self.stage.setup(num_threads)
        self.seconds = 0.0
        self.drop = _unneeded_after(self.stage.name, config)

    def __call__(self, table: pa.Table) -> pa.Table:
        name = self.stage.name
        if REJECT not in table.column_names:
            table = table.append_column(REJECT, null_column(REJECT, table.num_rows))
            table = table.append_column(REJECT_STAGE, null_column(REJECT_STAGE, table.num_rows))
        if ERROR not in table.column_names:
            table = table.append_column(ERROR, pa.nulls(table.num_rows, pa.string()))
        drop = [c for c in table.column_names if c in self.drop]
        if table.column(REJECT).null_count == table.num_rows:  # the usual batch: nothing rejected yet
            alive, dead = table, table.slice(0, 0)
        else:
            alive_mask = pc.is_null(table.column(REJECT))
            alive = table.filter(alive_mask)
            dead = table.filter(pc.invert(alive_mask))
        t0 = time.perf_counter()
        cols, rejects, errors = self._process_isolating(alive)
        self.seconds += time.perf_counter() - t0
        for col in self.stage.produces:
            alive = set_column(alive, col, cols[col])
            dead = set_column(dead, col, null_column(col, dead.num_rows, cols[col].type))
        if self.rules:
            rule_rejects = apply_rules(self.rules, alive)
            rejects = [r if r is not None else rr for r, rr in zip(rejects, rule_rejects)]
        reject_arr = pa.array(rejects, pa.string())
        alive = set_column(alive, REJECT, reject_arr)
        stage_col = pc.if_else(pc.is_null(reject_arr), pa.scalar(None, pa.string()), pa.scalar(name))
        alive = set_column(alive, REJECT_STAGE, stage_col)
        alive = set_column(alive, ERROR, pa.array(errors, pa.string()))
        out = pa.concat_tables([alive, dead.select(alive.column_names)]) if dead.num_rows else alive
        # Columns loaded from outside the map stages (the image bytes, ~100 KB-1 MB a row) that no
        # later stage of the fused segment reads would only ride through the object store to the
        # writer, which never writes them.
        return out.drop_columns(drop) if drop else out

    def _process_isolating(self, alive: pa.Table, retry: bool = True) -> tuple[dict[str, pa.Array], list, list]:
        """Process rows; on an exception retry the batch once (a transient fault costs no rows),
        then bisect so only bad rows are rejected. Halves are not retried whole again (that
        would double the work at every level); single rows are retried once."""
        try:
            return self._process(alive)
        except Exception as exc:  # noqa: BLE001 - any failure is isolated, recorded, never fatal
            error = exc
            if retry or alive.num_rows <= 1:
                try:
                    return self._process(alive)
                except Exception as again:  # noqa: BLE001
                    if alive.num_rows <= 1:
                        return self._failed(alive, again)
                    error = again
            log.warning("stage %s failed on a batch of %d rows (%s); bisecting", self.stage.name,
                        alive.num_rows, error)
            mid = alive.num_rows // 2
            a = self._process_isolating(alive.slice(0, mid), retry=False)
            b = self._process_isolating(alive.slice(mid), retry=False)
            cols = {c: _concat(a[0][c], b[0][c]) for c in self.stage.produces}
            return cols, a[1] + b[1], a[2] + b[2]

    def _process(self, alive: pa.Table) -> tuple[dict[str, pa.Array], list, list]:
        n = alive.num_rows
        if n == 0:
            return {c: null_column(c, 0) for c in self.stage.produces}, [], []
        required = [c for c in self.stage.required_columns() if c in alive.column_names]
        out: dict[str, Any] = self.stage.process(alive.select(required))
        cols = {}
        for col in self.stage.produces:
            if col not in out:
                raise KeyError(f"stage {self.stage.name} did not return column {col!r}")
            arr = to_array(col, out[col])
            if len(arr) != n:
                raise ValueError(f"stage {self.stage.name} returned {len(arr)} values of {col!r} for {n} rows")
            cols[col] = arr
        rejects = list(out.get(REJECT) or [None] * n)
        return cols, rejects, [None] * n

    def _failed(self, rows: pa.Table, exc: Exception) -> tuple[dict[str, pa.Array], list, list]:
        n = rows.num_rows
        cols = {c: null_column(c, n) for c in self.stage.produces}
        message = f"{type(exc).__name__}: {exc}"[:500]
        return cols, [f"error:{self.stage.name}"] * n, [message] * n


def _unneeded_after(name: str, config: Config) -> frozenset[str]:
    """Columns a batch can shed once stage `name` is done with it: produced outside the map
    stages (by `ingest`; the writer stores only what the job's own stages produce) and read by no
    later map stage of the same fused segment (global stages load their inputs afresh)."""
    from curation.stages.dag import all_stages, get_stage, run_stages

    names = run_stages(config)
    if name not in names:
        return frozenset()
    needed: set[str] = set()
    for later in names[names.index(name) + 1:]:
        cls = get_stage(later)
        if cls.kind != "map":
            break
        needed.update(cls(config).required_columns())
    outside = {c for cls in all_stages().values() if cls.kind != "map" for c in cls.produces}
    return frozenset(outside - needed)


def _concat(a: pa.Array, b: pa.Array) -> pa.Array:
    """Concatenate halves of a bisected batch; an all-null half takes the other half's type."""
    if a.type != b.type:
        if a.null_count == len(a):
            a = pa.nulls(len(a), b.type)
        elif b.null_count == len(b):
            b = pa.nulls(len(b), a.type)
    return pa.concat_arrays([a, b])
