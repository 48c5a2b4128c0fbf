"""Which member of a duplicate group is kept: a configurable lexicographic preference.

Keys are column names, `-name` meaning "higher is better"; `resolution` is width * height. The
default `("-resolution", "-aesthetic", "id")` keeps the largest image, then the prettiest, then the
smallest id, so the choice is deterministic however the rows were partitioned. Columns missing
from the data are skipped (e.g. no `aesthetic` when the quality stage did not run); nulls lose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_KEEP = ("-resolution", "-aesthetic", "id")
_DERIVED = {"resolution": ("width", "height")}


@dataclass(frozen=True)
class KeepPolicy:
    keys: tuple[str, ...] = DEFAULT_KEEP

    def __post_init__(self) -> None:
        if "id" not in [k.lstrip("-") for k in self.keys]:
            object.__setattr__(self, "keys", (*self.keys, "id"))  # ids break every tie

    def columns(self) -> tuple[str, ...]:
        """Source columns the policy may read (those absent from the data are skipped)."""
        cols: list[str] = []
        for key in self.keys:
            name = key.lstrip("-")
            for c in _DERIVED.get(name, (name,)):
                if c not in cols:
                    cols.append(c)
        return tuple(cols)

    def rank(self, table: pa.Table | dict[str, Any]) -> np.ndarray:
        """Rank per row, 0 = most preferred; ties are impossible because `id` is unique."""
        cols = table.column_names if isinstance(table, pa.Table) else list(table)
        sort_keys = []
        for key in self.keys:
            descending = key.startswith("-")
            name = key.lstrip("-")
            needed = _DERIVED.get(name, (name,))
            if not all(c in cols for c in needed):
                continue
            if name == "resolution":
                w, h = (_as_float(table[c]) for c in needed)
                values = w * h
            else:
                values = _as_sortable(table[name])
            if values.dtype.kind == "f":
                values = np.where(np.isnan(values), np.inf if not descending else -np.inf, values)
                values = -values if descending else values
            elif descending:
                values = -values.astype(np.int64)
            sort_keys.append(values)
        order = np.lexsort(tuple(reversed(sort_keys)))  # lexsort's last key is the primary one
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank


def _as_float(column: Any) -> np.ndarray:
    arr = column.to_numpy(zero_copy_only=False) if hasattr(column, "to_numpy") else np.asarray(column)
    return np.asarray(arr, dtype=np.float64)  # None -> nan


def _as_sortable(column: Any) -> np.ndarray:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            # strings rank by their sorted position so that they can be negated for "-name";
            # Arrow's C++ rank (UTF-8 byte order = code point order), nulls as nan: they lose
            dense = pc.rank(column, sort_keys="ascending", tiebreaker="dense")
            return np.where(pc.is_null(column).to_numpy(zero_copy_only=False), np.nan,
                            dense.to_numpy().astype(np.float64))
        return _as_float(column)
    arr = np.asarray(column)
    if arr.dtype.kind in "OUS":
        return np.unique(arr.astype(str), return_inverse=True)[1]
    return arr.astype(np.float64)


def keepers(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Index of the kept row of each row's group (itself when it is kept)."""
    labels = np.asarray(labels)
    order = np.lexsort((rank, labels))  # by group, best first inside a group
    sorted_labels = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    keeper = np.empty(len(order), dtype=np.int64)
    keeper[order] = order[group_start]
    return keeper
