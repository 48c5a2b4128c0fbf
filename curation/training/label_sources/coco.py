"""COCO-style keypoint JSON -> pose samples (one per annotated person, top-down).

Accepted annotations: COCO (17 body points in `keypoints`), COCO-WholeBody (`keypoints` 17 +
`foot_kpts` 6 + `face_kpts` 68 + `lefthand_kpts` 21 + `righthand_kpts` 21), or a flat
133-point `keypoints` list in COCO-WholeBody order. Each becomes `pose.json` with our 308 points.

COCO-WholeBody's 133 points in our 308 (heads/keypoints308.py):

    WB 0-16    body, COCO order          -> 0-16    (same names, same order)
    WB 17-22   feet                      -> 17-22   (left big toe, small toe, heel; then right)
    WB 23-90   face, 68 iBUG landmarks   -> not mapped: our 238 face points are a denser layout
                                            with no published correspondence to the 68; all 238
                                            are written invisible (the summary counts the
                                            labelled face points left out)
    WB 91      left hand root            -> left_wrist (9) when the body's wrist is unlabelled;
                                            otherwise dropped (the same joint)
    WB 92-111  left thumb1-4, forefinger1-4, middle1-4, ring1-4, pinky1-4 -> 261-280
    WB 112     right hand root           -> right_wrist (10), as for the left
    WB 113-132 right fingers             -> 281-300
    --         extras 301-307 (neck, acromia, olecrana, cubital fossae): invisible

A point is labelled when its visibility v > 0 (COCO: 1 occluded, 2 visible); every point the
source lacks is written [0, 0, 0] (invisible), so the heads give it zero weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curation.training.heads import keypoints308 as kp
from curation.training.label_sources import Outcome, Reject
from curation.training.label_sources.images import inside, read_image

WHOLEBODY_PARTS = (("keypoints", 17), ("foot_kpts", 6), ("face_kpts", 68), ("lefthand_kpts", 21),
                   ("righthand_kpts", 21))  # fmt: skip
FACE_WB = range(23, 91)
LEFT_ROOT, RIGHT_ROOT = 91, 112
# Index in our 308 for each of COCO-WholeBody's 133 (None: not mapped, see the table above).
WHOLEBODY_TO_308: list[int | None] = (
    list(range(23)) + [None] * 68 + [None] + list(range(261, 281)) + [None] + list(range(281, 301))
)
assert len(WHOLEBODY_TO_308) == 133


def wholebody_points(ann: dict[str, Any]) -> np.ndarray | None:
    """[133, 3] from any accepted layout (absent parts zero), or None when malformed."""
    flat = ann.get("keypoints", [])
    if len(flat) == 133 * 3:
        return np.asarray(flat, dtype=np.float64).reshape(133, 3)
    out = np.zeros((133, 3))
    start = 0
    for field, n in WHOLEBODY_PARTS:
        values = ann.get(field)
        if values is not None:
            if len(values) != n * 3:
                return None
            out[start : start + n] = np.asarray(values, dtype=np.float64).reshape(n, 3)
        elif field == "keypoints":
            return None
        start += n
    return out


def to_308(wb: np.ndarray) -> np.ndarray:
    """[133, 3] COCO-WholeBody -> [308, 3] ours; unmapped points [0, 0, 0]."""
    out = np.zeros((kp.NUM_KEYPOINTS, 3))
    for i, j in enumerate(WHOLEBODY_TO_308):
        if j is not None and wb[i, 2] > 0:
            out[j] = wb[i]
    wrists = (LEFT_ROOT, kp.NAMES.index("left_wrist")), (RIGHT_ROOT, kp.NAMES.index("right_wrist"))
    for root, wrist in wrists:
        if out[wrist, 2] <= 0 and wb[root, 2] > 0:
            out[wrist] = wb[root]
    return out


def coco_pose_samples(coco: dict[str, Any], images: Path, notes: dict[str, Any]) -> Iterator[Outcome]:
    """One outcome per annotation of `coco` (parsed COCO JSON); image files under `images`."""
    by_id = {im["id"]: im for im in coco.get("images", [])}
    cache: dict[Any, tuple[bytes, tuple[int, int], str] | Reject] = {}
    notes["face_points_not_mapped"] = 0
    for n, ann in enumerate(coco.get("annotations", [])):
        item = f"annotation {ann.get('id', n)}"
        image = by_id.get(ann.get("image_id"))
        if image is None:
            yield Reject(item, "unknown image_id", str(ann.get("image_id")))
            continue
        if ann.get("iscrowd", 0):
            yield Reject(item, "crowd annotation")
            continue
        wb = wholebody_points(ann)
        if wb is None:
            yield Reject(item, "malformed keypoints", "expected 17 (+ whole-body parts) or 133 points")
            continue
        points = to_308(wb)
        if not (points[:, 2] > 0).any():
            yield Reject(item, "no labelled keypoints")
            continue
        x, y, w, h = (float(v) for v in ann.get("bbox", (0, 0, 0, 0)))
        if image["id"] not in cache:
            cache.clear()  # annotations of one image are usually adjacent: keep one decoded image
            name = str(image.get("file_name", ""))
            path = inside(images, name)
            outside = Reject(item, "image path outside --images", name)
            cache[image["id"]] = read_image(path, item) if path else outside
        loaded = cache[image["id"]]
        if isinstance(loaded, Reject):
            yield Reject(item, loaded.reason, loaded.detail)
            continue
        data, (W, H), ext = loaded
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
            yield Reject(item, "empty or off-image box", f"bbox {ann.get('bbox')} in a {W}x{H} image")
            continue
        notes["face_points_not_mapped"] += int((wb[FACE_WB, 2] > 0).sum())
        key = f"{Path(image['file_name']).stem}_{ann.get('id', n)}"
        label = {"keypoints": points.tolist(), "box": [x0, y0, x1, y1]}
        yield {"__key__": key, ext: data, "pose.json": label}  # the tar writer JSON-encodes
