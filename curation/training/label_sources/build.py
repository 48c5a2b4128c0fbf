"""The `curate train labels` entry: check the inputs a kind needs, then write the shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.config import ConfigError
from curation.training.label_sources import KINDS, write_labelled_shards


def _need(value: Path | None, flag: str, kind: str, directory: bool) -> Path:
    if value is None:
        raise ConfigError(f"{kind} labels need {flag}")
    if directory and not value.is_dir():
        raise ConfigError(f"{flag} {value}: not a directory")
    if not directory and not value.is_file():
        raise ConfigError(f"{flag} {value}: no such file")
    return value


def _json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} {path}: not valid JSON ({exc})") from None


def build_labels(
    kind: str,
    out: Path,
    images: Path,
    *,
    annotations: Path | None = None,
    masks: Path | None = None,
    class_map: Path | None = None,
    maps: Path | None = None,
    intrinsics: Path | None = None,
    samples_per_shard: int = 1000,
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ConfigError(f"unknown label kind {kind!r}; known: {', '.join(KINDS)}")
    if samples_per_shard < 1:
        raise ConfigError("--samples-per-shard must be at least 1")
    images = _need(images, "--images", kind, directory=True)
    notes: dict[str, Any] = {}
    if kind == "pose":
        from curation.training.label_sources.coco import coco_pose_samples

        path = _need(annotations, "--annotations (COCO keypoint JSON)", kind, directory=False)
        ann = _json(path, "--annotations")
        if not isinstance(ann, dict) or "annotations" not in ann or "images" not in ann:
            raise ConfigError(f"--annotations {annotations}: not COCO JSON (no images / annotations)")
        outcomes = coco_pose_samples(ann, images, notes)
    elif kind == "seg":
        from curation.training.label_sources.dense import class_lookup, seg_samples

        mapping = _json(_need(class_map, "--class-map (JSON: your id -> our class)", kind, directory=False),
                        "--class-map")  # fmt: skip
        try:
            class_lookup(mapping)
        except ValueError as exc:
            raise ConfigError(f"--class-map {class_map}: {exc}") from None
        outcomes = seg_samples(images, _need(masks, "--masks", kind, directory=True), mapping)
    else:
        from curation.training.label_sources.dense import geometry_samples

        shared = None
        if intrinsics is not None:
            shared = _json(_need(intrinsics, "--intrinsics", kind, directory=False), "--intrinsics")
        outcomes = geometry_samples(kind, images, _need(maps, "--maps", kind, directory=True), shared)
    return write_labelled_shards(outcomes, Path(out), kind, samples_per_shard, notes)
