"""Image decoding shared by every stage that looks at pixels.

Models look at 224-640 px; a 4000 px JPEG decoded in full and then resized costs 3x more than a
DCT-scaled decode (ENV.md). `decode_rgb` asks libjpeg for the smallest scale that still covers the
size the model needs (PIL `draft`), applies the EXIF orientation, and converts any mode (CMYK,
greyscale, 16-bit, palette, alpha) to 8-bit RGB.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# We check pixel counts ourselves against config (decode.max_pixels) before decoding anything,
# so PIL's global bomb guard must not fire first with a different limit.
Image.MAX_IMAGE_PIXELS = None

# ultralytics replaces PIL's Image.open process-wide with a wrapper that, on any unidentified
# file, tries to pip-install pi-heif and retry. A crawl is full of unidentified files, and a
# worker that also ran YOLO must classify them the same way, so we always call PIL's own open.
_patches = sys.modules.get("ultralytics.utils.patches")
pil_open = getattr(_patches, "_image_open", None) or Image.open

ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class Probe:
    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int
    orientation: int
    n_frames: int


def probe(data: bytes) -> Probe:
    """Read the header only: format, mode, oriented size, frame count. Raises on non-images."""
    with pil_open(io.BytesIO(data)) as im:
        orientation = 1
        try:
            orientation = int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block does not make a broken image
            orientation = 1
        w, h = im.size
        if orientation in _SWAPS_AXES:
            w, h = h, w
        return Probe(
            format=im.format or "UNKNOWN",
            mode=im.mode,
            width=w,
            height=h,
            orientation=orientation if 1 <= orientation <= 8 else 1,
            n_frames=int(getattr(im, "n_frames", 1) or 1),
        )


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; alpha is composited on white (transparent areas are not black)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def open_oriented(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode to RGB with EXIF orientation; with `min_side`, at the smallest JPEG DCT scale whose
    short side is still >= min_side (never below it), else at full size."""
    im = pil_open(io.BytesIO(data))
    if min_side is not None and im.format == "JPEG":
        w, h = im.size
        scale = max(1, min(8, min(w, h) // max(1, min_side)))
        # draft picks the largest reduction (1/2, 1/4, 1/8) that keeps the image >= the request.
        im.draft("RGB", (max(1, w // scale), max(1, h // scale)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im.load()
    im = ImageOps.exif_transpose(im) or im
    return to_rgb(im)


def decode_rgb(data: bytes, min_side: int | None = None) -> tuple[np.ndarray, float]:
    """RGB uint8 array [H, W, 3] and the factor from its pixels to original-image pixels."""
    full = probe(data)
    im = open_oriented(data, min_side)
    arr = np.asarray(im, dtype=np.uint8)
    return arr, full.width / max(1, arr.shape[1])


def encode_jpeg(im: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def normalized_jpeg(data: bytes, fmt: str | None, mode: str | None, orientation: int | None,
                    quality: int = 95, resize: int | None = None) -> tuple[bytes, float]:
    """Bytes a trainer can read without surprises: upright 8-bit RGB/L JPEG, and the factor from
    original pixels to the stored image's (1.0 unless resized).

    Baseline JPEGs that need no rotation keep their original bytes (no generation loss); anything
    else (PNG, WebP, CMYK, 16-bit, alpha, rotated) is re-encoded once. With `resize`, an image whose
    shorter side is longer than that is scaled to it with area averaging (decoded at the smallest
    DCT scale that still covers it) and re-encoded once.
    """
    if resize:
        im = open_oriented(data, resize)
        full = probe(data)
        short = min(full.width, full.height)
        if short > resize:
            scale = resize / short
            size = (max(1, round(full.width * scale)), max(1, round(full.height * scale)))
            return encode_jpeg(im.resize(size, Image.Resampling.BOX), quality), scale
    if fmt == "JPEG" and mode in ("RGB", "L") and (orientation or 1) == 1:
        return data, 1.0
    return encode_jpeg(open_oriented(data), quality), 1.0
