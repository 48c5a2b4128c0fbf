"""Pixels for a model, at the resolution it looks at (never a full decode when it looks at 640 px).

`decode_rgb` takes the short side it must keep; models letterbox on the long side, so the short
side to ask for follows from the image's aspect ratio (from the `width`/`height` columns).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from curation.imaging import decode_rgb


def short_side_for(width: int | None, height: int | None, long_side: int) -> int | None:
    """The short side that keeps the long side >= `long_side` after a DCT-scaled decode."""
    if not width or not height:
        return None
    return max(1, math.ceil(long_side * min(width, height) / max(width, height)))


def decode_rows(table: pa.Table, long_side: int | None = None, short_side: int | None = None
                ) -> tuple[list[np.ndarray | None], list[float], list[str | None]]:
    """(RGB arrays, factor to original pixels, error message) per row; a row that fails to decode
    gets None and its message, so the stage can reject that row alone."""
    data = table.column("image").to_pylist()
    n = len(data)
    widths = table.column("width").to_pylist() if "width" in table.column_names else [None] * n
    heights = table.column("height").to_pylist() if "height" in table.column_names else [None] * n
    arrays: list[np.ndarray | None] = []
    factors: list[float] = []
    errors: list[str | None] = []
    for blob, w, h in zip(data, widths, heights):
        need = short_side if long_side is None else short_side_for(w, h, long_side)
        try:
            arr, factor = decode_rgb(blob, need)
            arrays.append(arr)
            factors.append(factor)
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - decode validated it; a failure here rejects one row
            arrays.append(None)
            factors.append(1.0)
            errors.append(f"{type(e).__name__}: {e}")
    return arrays, factors, errors
