"""Reading a user's image file for a labelled sample: its bytes as stored, and its size."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from curation.training.label_sources import Reject

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_PIXELS = 100_000_000  # beyond this a file is treated as a decompression bomb, not decoded


FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # PIL format -> the sample's image key


def read_image(path: Path, item: str) -> tuple[bytes, tuple[int, int], str] | Reject:
    """(file bytes, (width, height), sample key) after a full decode check, or why not."""
    if not path.is_file():
        return Reject(item, "image file missing", str(path))
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in FORMATS:
                return Reject(item, "unsupported image format", f"{path}: {im.format}")
            if im.width * im.height > MAX_PIXELS:
                return Reject(item, "image too large", f"{path}: {im.width}x{im.height}")
            im.load()  # a truncated or corrupt file fails here, not in a training worker
            return data, im.size, FORMATS[im.format]
    except Exception as exc:  # noqa: BLE001  (any decoder error is this item's reject reason)
        return Reject(item, "unreadable image", f"{path}: {exc}")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
