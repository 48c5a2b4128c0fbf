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
    """(file bytes, (width, height), sample key) after a full decode check, or why not. Links are
    not followed: the input may name only files that really lie in its folders."""
    if path.is_symlink():
        return Reject(item, "symlink not followed", str(path))
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
    """Every image-named entry of `folder` (links included, so that read_image rejects them)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def inside(root: Path, name: str) -> Path | None:
    """root / name, or None when `name` climbs out of `root` (absolute, or through `..`)."""
    path = root / name
    return path if path.resolve().is_relative_to(root.resolve()) and not Path(name).is_absolute() else None
