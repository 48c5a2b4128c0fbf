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


def sizes(table: pa.Table) -> tuple[list[int | None], list[int | None]]:
    """Original (oriented) width and height per row, from `decode`'s columns."""
    n = table.num_rows
    widths = table.column("width").to_pylist() if "width" in table.column_names else [None] * n
    heights = table.column("height").to_pylist() if "height" in table.column_names else [None] * n
    return widths, heights


def decode_rows(table: pa.Table, long_side: int | None = None, short_sides: list[int | None] | None = None
                ) -> tuple[list[np.ndarray | None], list[float], list[str | None]]:
    """(RGB arrays, factor to original pixels, error message) per row; a row that fails to decode
    gets None and its message, so the stage can reject that row alone.

    `long_side`: every row decoded so that its long side still covers it (letterboxing models);
    `short_sides`: a short side per row (None: full size)."""
    data = table.column("image").to_pylist()
    widths, heights = sizes(table)
    if short_sides is None:
        short_sides = [short_side_for(w, h, long_side) if long_side else None for w, h in zip(widths, heights)]
    arrays: list[np.ndarray | None] = []
    factors: list[float] = []
    errors: list[str | None] = []
    for blob, need in zip(data, short_sides):
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
