"""Per-image label files -> dense samples: segmentation PNGs with a class map; normals or
pointmaps as .npy arrays (pointmaps with intrinsics). One outcome per image of the image folder.

Files are matched by stem: `images/person1.jpg` with `masks/person1.png` or `maps/person1.npy`.

seg       a single-channel PNG of the user's class ids; `class_map` maps each id (a JSON key) to
          one of our 29 body-part class names or ids, or to "ignore" (written 255). An id the map
          does not name rejects the image: a silent guess would teach the head wrong classes.
normal    float [H, W, 3] unit normals in the camera frame (x right, y down, z forward); pixels
          that are non-finite or zero are invalid and left out through `mask.png`; a valid pixel
          whose length is not 1 +- 0.01 rejects the image.
pointmap  float [H, W, 3] camera-frame XYZ; pixels non-finite or with z <= 0 are masked out.
          Intrinsics {"fx", "fy", "cx", "cy"} in pixels: `maps/<stem>.json`, or the `intrinsics`
          file (one object for every image, or {stem: object}).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation.training.heads import body_parts
from curation.training.label_sources import Outcome, Reject
from curation.training.label_sources.images import list_images, read_image

INTRINSICS = ("fx", "fy", "cx", "cy")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def class_lookup(class_map: dict[str, Any]) -> np.ndarray:
    """A 256-entry table: user id -> our class id (255 ignore); -1 where the map names nothing."""
    table = np.full(256, -1, dtype=np.int64)
    for user_id, ours in class_map.items():
        if not str(user_id).isdigit() or not 0 <= int(user_id) <= 255:
            raise ValueError(f"class map key {user_id!r}: user class ids are integers 0-255")
        if ours == "ignore":
            table[int(user_id)] = body_parts.IGNORE_INDEX
        elif isinstance(ours, int) and 0 <= ours < body_parts.NUM_CLASSES:
            table[int(user_id)] = ours
        elif ours in body_parts.CLASSES:
            table[int(user_id)] = body_parts.CLASSES.index(ours)
        else:
            known = ", ".join(body_parts.CLASSES)
            raise ValueError(f"class map {user_id!r} -> {ours!r}: not one of our classes ({known})")
    return table


def _images_and_labels(images: Path, labels: Path, suffix: str) -> Iterator[Reject | tuple]:
    """Per image of the folder: (path, item, (bytes, size, key), label path), or why not."""
    for path in list_images(images):
        item = path.name
        loaded = read_image(path, item)
        label = labels / f"{path.stem}{suffix}"
        if isinstance(loaded, Reject):
            yield loaded
        elif label.is_symlink() or not label.is_file():
            yield Reject(item, "label file missing", str(label))
        else:
            yield path, item, loaded, label


def seg_samples(images: Path, masks: Path, class_map: dict[str, Any]) -> Iterator[Outcome]:
    table = class_lookup(class_map)
    for found in _images_and_labels(images, masks, ".png"):
        if isinstance(found, Reject):
            yield found
            continue
        path, item, (data, size, ext), mask_path = found
        try:
            with Image.open(mask_path) as im:
                if im.mode not in ("L", "P"):
                    yield Reject(item, "mask not single-channel", f"{mask_path}: mode {im.mode}")
                    continue
                ids = np.asarray(im)
        except Exception as exc:  # noqa: BLE001
            yield Reject(item, "unreadable label file", f"{mask_path}: {exc}")
            continue
        if ids.shape != (size[1], size[0]):
            yield Reject(item, "label size differs from image", f"{ids.shape[::-1]} vs {size}")
            continue
        labels = table[ids]
        unknown = np.unique(ids[labels < 0])
        if unknown.size:
            yield Reject(item, "class id not in the class map", f"ids {unknown.tolist()}")
            continue
        yield {"__key__": path.stem, ext: data, "seg.png": _png(labels.astype(np.uint8))}


def _intrinsics_for(stem: str, maps: Path, shared: dict[str, Any] | None) -> dict[str, float] | None:
    own = maps / f"{stem}.json"
    if own.is_file():
        k = json.loads(own.read_text())
    elif shared is not None:
        k = shared if all(n in shared for n in INTRINSICS) else shared.get(stem)  # one for all, or per stem
    else:
        return None
    if not isinstance(k, dict) or not all(isinstance(k.get(n), (int, float)) for n in INTRINSICS):
        return None
    return {n: float(k[n]) for n in INTRINSICS}


def geometry_samples(kind: str, images: Path, maps: Path, intrinsics: dict[str, Any] | None = None
                     ) -> Iterator[Outcome]:  # fmt: skip
    """`kind` normal or pointmap."""
    for found in _images_and_labels(images, maps, ".npy"):
        if isinstance(found, Reject):
            yield found
            continue
        path, item, (data, (W, H), ext), map_path = found
        try:
            array = np.load(map_path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            yield Reject(item, "unreadable label file", f"{map_path}: {exc}")
            continue
        if array.shape != (H, W, 3) or not np.issubdtype(array.dtype, np.floating):
            want = f"{array.shape} {array.dtype}, want ({H}, {W}, 3) float"
            yield Reject(item, "label shape or type wrong", want)
            continue
        array = array.astype(np.float32)
        valid = np.isfinite(array).all(-1)
        sample = {"__key__": path.stem, ext: data}
        if kind == "normal":
            length = np.linalg.norm(np.where(valid[..., None], array, 0), axis=-1)
            valid &= length > 0
            if (np.abs(length[valid] - 1) > 0.01).any():
                lengths = f"lengths {length[valid].min():.3f}-{length[valid].max():.3f}"
                yield Reject(item, "normals not unit length", lengths)
                continue
        else:
            valid &= np.where(valid, array[..., 2], 0) > 0
            k = _intrinsics_for(path.stem, maps, intrinsics)
            if k is None:
                where = f"no {maps / (path.stem + '.json')} and none in --intrinsics"
                yield Reject(item, "intrinsics missing", where)
                continue
            sample["intrinsics.json"] = k  # the tar writer JSON-encodes
        if not valid.any():
            yield Reject(item, "no valid label pixels")
            continue
        sample[f"{kind}.npy"] = _npy(np.where(valid[..., None], array, 0).astype(np.float32))
        sample["mask.png"] = _png((valid * 255).astype(np.uint8))
        yield sample
