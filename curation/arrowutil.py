"""Small Arrow helpers: stage outputs to typed arrays, and aligning columns by row id."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import ID, arrow_type


def to_array(column: str, values: Any) -> pa.Array:
    """A stage's output values as an Arrow array of the column's declared type.

    A 2-D numpy array becomes a fixed-size list (dense [N, D] for readers, e.g. `clip`).
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    declared = arrow_type(column)
    if isinstance(values, np.ndarray) and values.ndim == 2:
        inner = declared.value_type if pa.types.is_list(declared) or pa.types.is_fixed_size_list(declared) else None
        flat = values.reshape(-1)
        if inner is not None:
            flat = flat.astype(inner.to_pandas_dtype(), copy=False)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), values.shape[1])
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return pa.array(values, type=declared)


def align(base_ids: pa.Array, other: pa.Table) -> pa.Table:
    """Rows of `other` reordered to match `base_ids` (missing ids become nulls).

    Acero's hash join does not take list columns (boxes, CLIP vectors), so we align by index.
    """
    idx = pc.index_in(base_ids, value_set=other.column(ID))
    return other.take(idx)


def set_column(table: pa.Table, name: str, array: pa.Array | pa.ChunkedArray) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


def null_column(column: str, n: int, like: pa.DataType | None = None) -> pa.Array:
    return pa.nulls(n, type=like or arrow_type(column))
