"""64-bit perceptual hash (imagehash pHash) of encoded image bytes.

pHash looks at a 32x32 greyscale thumbnail, so decoding a 4000 px JPEG in full would waste ~3x
the CPU (ENV.md): `open_oriented(..., min_side)` asks libjpeg for a DCT-scaled decode whose short
side stays >= `min_side`, and imagehash does the rest. Orientation is applied first so that a
rotated-by-EXIF copy hashes like its upright twin.
"""

from __future__ import annotations

import imagehash
import numpy as np

from curation.imaging import open_oriented

HASH_BITS = 64
DEFAULT_DECODE_MIN_SIDE = 128  # 4x the 32 px pHash thumbnail: the LANCZOS resize still averages


def phash_uint64(data: bytes, decode_min_side: int = DEFAULT_DECODE_MIN_SIDE) -> int:
    """pHash of one encoded image as an unsigned 64-bit int (bit 63 = first DCT coefficient)."""
    im = open_oriented(data, decode_min_side)
    bits = imagehash.phash(im, hash_size=8).hash.reshape(-1)  # [64] bool, row-major 8x8 DCT
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_many(images: list[bytes | None], decode_min_side: int = DEFAULT_DECODE_MIN_SIDE
               ) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of many images: (uint64 [N], ok bool [N]). A bad image gets ok=False, never raises:
    one corrupt file must not fail a batch of thousands."""
    out = np.zeros(len(images), dtype=np.uint64)
    ok = np.zeros(len(images), dtype=bool)
    for i, data in enumerate(images):
        if not data:
            continue
        try:
            value = phash_uint64(data, decode_min_side)
        except Exception:  # noqa: BLE001, S112 - a decoder failure is a recorded reject (phash_failed)
            continue
        out[i] = value
        ok[i] = True
    return out, ok
