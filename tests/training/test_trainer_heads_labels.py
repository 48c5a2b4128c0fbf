"""Label-aware augmentation: crops, resizes and flips move labels with the pixels; un-flipping predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation.training.data.shards import iter_shard, resolve_shards
from curation.training.heads import body_parts, keypoints308, udp
from curation.training.heads.labels import TaskDecoder
from curation.training.heads.tasks import TASKS

pytestmark = pytest.mark.timeout(60)


def _raws(manifest):
    return list(iter_shard(resolve_shards(str(manifest))[0].url))


def _decode(cfg, raw, seed, train=True):
    return TaskDecoder(cfg, train=train)(raw, torch.Generator().manual_seed(seed))


def test_pose_flip_swaps_left_and_right_keypoints(labelled, head_config):
    # The synthetic skeleton is mirror-symmetric: mirroring the crop *and* swapping left/right
    # indices leaves every keypoint where it was; mirroring without the swap would not.
    raw = _raws(labelled("pose"))[0]
    plain = _decode(head_config("pose"), raw, 0, train=False)
    cfg = head_config(
        "pose", data={"augment": True, "hflip_prob": 1.0, "rotation": 0.0, "box_scale": [1.0, 1.0]}
    )
    flipped = _decode(cfg, raw, 0)
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    vis = (plain["visible"] > 0) & (flipped["visible"] > 0)
    err = (flipped["keypoints"] - plain["keypoints"]).norm(dim=-1)[vis]
    assert err.max() < 2.0  # the template's per-sample jitter
    left, right = keypoints308.NAMES.index("left_wrist"), keypoints308.NAMES.index("right_wrist")
    assert plain["keypoints"][left, 0] < 32 < plain["keypoints"][right, 0]
    assert flipped["keypoints"][left, 0] < 32 < flipped["keypoints"][right, 0]
    # Heatmap targets follow: un-flipping the flipped targets gives the plain ones back.
    unflipped = udp.flip_heatmaps(flipped["heatmaps"][None], keypoints308.FLIP_INDICES)[0]
    both = vis[:, None, None]
    assert ((unflipped - plain["heatmaps"]).abs() * both).max() < 0.5


def test_pose_crop_maps_keypoints_with_the_pixels(labelled, head_config):
    raw = _raws(labelled("pose"))[1]
    cfg = head_config("pose", data={"augment": True, "hflip_prob": 0.0, "rotation": 30.0})
    sample = _decode(cfg, raw, 3)
    M = sample["affine"].numpy()
    import json

    kpts = np.asarray(json.loads(raw["pose.json"])["keypoints"])
    expected = kpts[:, :2] @ M[:, :2].T + M[:, 2]
    np.testing.assert_allclose(sample["keypoints"].numpy(), expected, atol=1e-3)
    assert abs(np.degrees(np.arctan2(M[1, 0], M[0, 0]))) > 0  # it did rotate


def test_seg_flip_swaps_left_and_right_classes(labelled, head_config):
    # Synthetic labels: red pixels are left_upper_arm on the image's left half, right_upper_arm on
    # its right half. After a flip with the class swap that still holds.
    cfg = head_config("seg", data={"augment": True, "hflip_prob": 1.0, "scale": [1.0, 1.0]})
    left, right = body_parts.CLASSES.index("left_upper_arm"), body_parts.CLASSES.index("right_upper_arm")
    for raw in _raws(labelled("seg")):
        labels = _decode(cfg, raw, 0)["labels"]
        assert labels.dtype == torch.int64
        assert not (labels[:, :32] == right).any() and not (labels[:, 32:] == left).any()
        assert (labels == 255).sum() == 16  # the ignored corner moved to the top right
        assert (labels[:4, -4:] == 255).all()


def test_pointmap_crop_and_flip_keep_points_projecting_onto_their_pixels(labelled, head_config):
    cfg = head_config("pointmap", data={"augment": True, "hflip_prob": 1.0, "scale": [0.3, 0.6]})
    for seed, raw in enumerate(_raws(labelled("pointmap"))):
        s = _decode(cfg, raw, seed)
        fx, fy, cx, cy = s["intrinsics"].tolist()
        X, Y, Z = s["points"]  # canonical: a uniform rescale, so projections are unchanged
        m = s["mask"][0] > 0
        v, u = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
        err_u = (fx * X / Z + cx - u)[m].abs()
        err_v = (fy * Y / Z + cy - v)[m].abs()
        # nearest resampling moves a point by up to half a source pixel, scaled by the zoom
        assert err_u.max() < 1.1 and err_v.max() < 1.1, (err_u.max(), err_v.max())
        assert s["log_scale"] == pytest.approx(np.log(np.sqrt(fx * fy) / cfg.loss.canonical_focal))


def test_normals_flip_negates_x(labelled, head_config):
    raw = _raws(labelled("normal"))[0]
    plain = _decode(head_config("normal"), raw, 0, train=False)
    cfg = head_config("normal", data={"augment": True, "hflip_prob": 1.0, "scale": [1.0, 1.0]})
    flipped = _decode(cfg, raw, 0)
    expected = plain["normals"].flip(-1) * torch.tensor([-1.0, 1.0, 1.0])[:, None, None]
    torch.testing.assert_close(flipped["normals"], expected)


@pytest.mark.parametrize("task", ["seg", "normal", "albedo", "pointmap"])
def test_unflipping_a_flipped_prediction_recovers_it(task):
    torch.manual_seed(0)
    t = TASKS[task]
    if task == "pointmap":
        out = {"points": torch.randn(2, 3, 8, 8), "log_scale": torch.randn(2)}
        back = t.unflip(t.unflip(out))
        torch.testing.assert_close(back["points"], out["points"])
        return
    channels = {"seg": body_parts.NUM_CLASSES, "normal": 3, "albedo": 3}[task]
    out = torch.randn(2, channels, 8, 8)
    torch.testing.assert_close(t.unflip(t.unflip(out)), out)
    if task == "seg":
        # The left-hand score of the mirrored image becomes the right-hand score at the mirrored pixel.
        lh, rh = body_parts.CLASSES.index("left_hand"), body_parts.CLASSES.index("right_hand")
        torch.testing.assert_close(t.unflip(out)[:, rh, :, 0], out[:, lh, :, -1])
