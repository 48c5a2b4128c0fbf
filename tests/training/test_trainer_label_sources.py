"""`curate train labels`: COCO(-WholeBody) keypoints, segmentation PNGs, normal / pointmap arrays
-> labelled shards that the heads read; every bad item is a reject with its reason."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from curation.training.data.shards import iter_shard, resolve_shards
from curation.training.heads import body_parts
from curation.training.heads import keypoints308 as kp
from curation.training.heads.labels import TaskDecoder, require_labels
from curation.training.label_sources.build import build_labels

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def images(tmp_path, photos):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, photo in enumerate(photos[:3]):
        photo.resize((96, 64)).save(folder / f"p{i}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def _samples(out):
    return [s for shard in resolve_shards(str(out / "manifest.json")) for s in iter_shard(shard.url)]


def _check_accounting(summary, out, written):
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert summary["written"] == written == len(_samples(out))
    assert summary["inputs"] == summary["written"] + len(rejects) == written + sum(summary["rejects"].values())
    return {r["item"]: r["reason"] for r in rejects}


def test_coco_wholebody_to_308(tmp_path, images, head_config):
    wb = np.zeros((133, 3))
    wb[0] = [40, 20, 2]  # nose
    wb[17] = [30, 60, 2]  # left big toe
    wb[30] = [41, 21, 2]  # a face landmark: not mapped
    wb[91] = [50, 40, 2]  # left hand root; the body's left wrist (9) is unlabelled
    wb[92] = [52, 42, 1]  # left thumb1
    wb[113] = [20, 40, 2]  # right thumb1
    body = np.zeros((17, 3))
    body[5] = [30, 30, 2]
    anns = [
        {"id": 1, "image_id": 0, "bbox": [10, 5, 60, 55], "keypoints": wb[:17].ravel().tolist(),
         "foot_kpts": wb[17:23].ravel().tolist(), "face_kpts": wb[23:91].ravel().tolist(),
         "lefthand_kpts": wb[91:112].ravel().tolist(), "righthand_kpts": wb[112:].ravel().tolist()},
        {"id": 2, "image_id": 1, "bbox": [0, 0, 96, 64], "keypoints": body.ravel().tolist()},  # plain COCO
        {"id": 3, "image_id": 1, "bbox": [0, 0, 9, 9], "keypoints": body.ravel().tolist(), "iscrowd": 1},
        {"id": 4, "image_id": 99, "bbox": [0, 0, 9, 9], "keypoints": body.ravel().tolist()},
        {"id": 5, "image_id": 1, "bbox": [0, 0, 9, 9], "keypoints": [0] * 51},
        {"id": 6, "image_id": 2, "bbox": [0, 0, 9, 9], "keypoints": body.ravel().tolist()},
        {"id": 7, "image_id": 3, "bbox": [0, 0, 9, 9], "keypoints": body.ravel().tolist()},
        {"id": 8, "image_id": 1, "bbox": [200, 200, 9, 9], "keypoints": body.ravel().tolist()},
        {"id": 9, "image_id": 1, "bbox": [0, 0, 9, 9], "keypoints": [1, 2, 2, 3]},
        {"id": 10, "image_id": 4, "bbox": [0, 0, 9, 9], "keypoints": body.ravel().tolist()},
    ]  # fmt: skip
    coco = {"images": [{"id": 0, "file_name": "p0.jpg"}, {"id": 1, "file_name": "p1.jpg"},
                       {"id": 2, "file_name": "broken.jpg"}, {"id": 3, "file_name": "gone.jpg"},
                       {"id": 4, "file_name": "../ann.json"}],
            "annotations": anns}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    out = tmp_path / "pose"
    summary = build_labels("pose", out, images, annotations=tmp_path / "ann.json", samples_per_shard=1)
    reasons = _check_accounting(summary, out, written=2)
    assert reasons == {
        "annotation 3": "crowd annotation", "annotation 4": "unknown image_id",
        "annotation 5": "no labelled keypoints", "annotation 6": "unreadable image",
        "annotation 7": "image file missing", "annotation 8": "empty or off-image box",
        "annotation 9": "malformed keypoints", "annotation 10": "image path outside --images",
    }  # fmt: skip
    assert summary["shards"] == 2 and summary["face_points_not_mapped"] == 1

    first = _samples(out)[0]
    label = json.loads(first["pose.json"])
    points = np.asarray(label["keypoints"])
    assert points.shape == (308, 3) and label["box"] == [10.0, 5.0, 70.0, 60.0]
    labelled = {kp.NAMES[i]: points[i].tolist() for i in np.flatnonzero(points[:, 2] > 0)}
    assert labelled == {"nose": [40, 20, 2], "left_big_toe": [30, 60, 2], "left_wrist": [50, 40, 2],
                        "left_thumb1": [52, 42, 1], "right_thumb1": [20, 40, 2]}  # fmt: skip
    # The heads read what was written.
    require_labels(resolve_shards(str(out / "manifest.json")), "pose")
    sample = TaskDecoder(head_config("pose"), train=False)(first, torch.Generator().manual_seed(0))
    assert sample["target_weights"].sum() == 5


def test_seg_pngs_with_a_class_map(tmp_path, images, head_config):
    masks = tmp_path / "masks"
    masks.mkdir()
    ids = np.zeros((64, 96), np.uint8)
    ids[:, 48:] = 7
    ids[:4, :4] = 200
    Image.fromarray(ids).save(masks / "p0.png")
    Image.fromarray(np.full((64, 96), 9, np.uint8)).save(masks / "p1.png")  # 9 is not in the map
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / "broken.png")
    # p2 has no mask at all; a link to a file outside the input is not followed
    (images / "link.jpg").symlink_to(images / "p0.jpg")
    class_map = tmp_path / "classes.json"
    class_map.write_text(json.dumps({"0": "background", "7": "torso", "200": "ignore"}))
    out = tmp_path / "seg"
    result = CliRunner().invoke(_app(), [
        "train", "labels", "seg", "--images", str(images), "--masks", str(masks), "--class-map", str(class_map),
        "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "seg: 5 inputs = 1 written + 4 rejected" in result.output
    summary = json.loads((out / "summary.json").read_text())
    reasons = _check_accounting(summary, out, written=1)
    assert reasons == {"broken.jpg": "unreadable image", "p1.jpg": "class id not in the class map",
                       "p2.jpg": "label file missing", "link.jpg": "symlink not followed"}  # fmt: skip
    written = np.asarray(Image.open(io.BytesIO(_samples(out)[0]["seg.png"])))
    assert (written[:, 60] == body_parts.CLASSES.index("torso")).all() and written[10, 10] == 0
    assert (written[:4, :4] == body_parts.IGNORE_INDEX).all()
    labels = TaskDecoder(head_config("seg"), train=False)(_samples(out)[0], torch.Generator())["labels"]
    assert set(labels.unique().tolist()) <= {0, body_parts.CLASSES.index("torso"), 255}


def _app():
    from curation import cli

    if not any(group.name == "train" for group in cli.app.registered_groups):
        cli._add_optional_apps()
    return cli.app


def test_normals_and_pointmaps(tmp_path, images, head_config):
    maps = tmp_path / "maps"
    maps.mkdir()
    normals = np.zeros((64, 96, 3), np.float32)
    normals[..., 2] = -1
    normals[0, 0] = np.nan  # an invalid pixel: masked out, not a reject
    np.save(maps / "p0.npy", normals)
    np.save(maps / "p1.npy", normals * 2)  # not unit length
    np.save(maps / "p2.npy", normals[:10])  # wrong shape
    out = tmp_path / "normal"
    summary = build_labels("normal", out, images, maps=maps)
    assert _check_accounting(summary, out, written=1) == {
        "broken.jpg": "unreadable image", "p1.jpg": "normals not unit length", "p2.jpg": "label shape or type wrong"}
    sample = TaskDecoder(head_config("normal"), train=False)(_samples(out)[0], torch.Generator())
    assert sample["mask"][0, 0, 0] == 0 and sample["mask"].mean() > 0.99

    points = np.ones((64, 96, 3), np.float32)
    points[..., 2] = 3.0
    for stem in ("p0", "p1", "p2"):
        np.save(maps / f"{stem}.npy", points)
    (maps / "p1.json").write_text(json.dumps({"fx": 80, "fy": 80, "cx": 48, "cy": 32}))  # its own file
    shared = tmp_path / "intrinsics.json"
    shared.write_text(json.dumps({"p0": {"fx": 100, "fy": 100, "cx": 48, "cy": 32}}))  # p2: none
    out = tmp_path / "pointmap"
    summary = build_labels("pointmap", out, images, maps=maps, intrinsics=shared)
    assert _check_accounting(summary, out, written=2) == {
        "broken.jpg": "unreadable image", "p2.jpg": "intrinsics missing"}
    fx = [json.loads(s["intrinsics.json"])["fx"] for s in _samples(out)]
    assert fx == [100.0, 80.0]
    TaskDecoder(head_config("pointmap"), train=False)(_samples(out)[0], torch.Generator())
