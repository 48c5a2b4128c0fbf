"""Embedding columns (Arrow list / fixed-size list of float16) as dense numpy matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """([N, D] float16 matrix, valid [N] bool). Null rows come back as zero vectors, marked
    invalid; D is taken from the first valid row (a run's CLIP width is fixed)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_fixed_size_list(column.type):
        d = column.type.list_size
        # .values of a sliced fixed-size list starts at the slice: take our window explicitly
        flat = column.values.slice(column.offset * d, n * d).to_numpy(zero_copy_only=False)
        out = np.asarray(flat, dtype=np.float16).reshape(n, d).copy()
        out[~valid] = 0  # a null slot holds whatever bytes were there
        return out, valid
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    d = int(lengths[valid][0]) if valid.any() else 0
    out = np.zeros((n, d), dtype=np.float16)
    if valid.any():
        out[valid] = np.asarray(column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False),
                                dtype=np.float16).reshape(-1, d)
    return out, valid
