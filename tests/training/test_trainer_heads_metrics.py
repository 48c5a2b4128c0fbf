"""Post-training metrics against hand-computed cases; UDP heatmaps; the 308-keypoint and 29-class definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from curation.training.heads import body_parts, keypoints308, udp
from curation.training.heads.metrics import (
    AlbedoMetric,
    NormalMetric,
    OKSMetric,
    PointmapMetric,
    SegMetric,
    oks,
)

pytestmark = pytest.mark.timeout(60)


def test_keypoint_and_class_definitions():
    assert keypoints308.NUM_KEYPOINTS == 308
    assert {g: len(i) for g, i in keypoints308.GROUPS.items()} == {
        "body": 17, "feet": 6, "face": 238, "hands": 40, "extras": 7,
    }  # fmt: skip
    names, flip = keypoints308.NAMES, keypoints308.FLIP_INDICES
    assert names[flip[names.index("left_wrist")]] == "right_wrist"
    assert names[flip[names.index("right_pinky_finger4")]] == "left_pinky_finger4"
    assert names[flip[names.index("nose")]] == "nose"
    assert all(flip[flip[i]] == i for i in range(308))
    assert keypoints308.SIGMAS[names.index("left_hip")] == 0.107  # COCO
    assert keypoints308.SIGMAS[names.index("left_big_toe")] == 0.068  # COCO-WholeBody
    assert body_parts.NUM_CLASSES == 29
    c, f = body_parts.CLASSES, body_parts.FLIP_CLASSES
    assert c[f[c.index("left_shoe")]] == "right_shoe" and c[f[c.index("torso")]] == "torso"


def test_udp_encode_decode_is_exact_and_flip_consistent():
    kpts = torch.tensor([[10.3, 20.7], [50.0, 3.2], [31.5, 31.5]])
    heatmaps, weights = udp.encode(kpts, torch.tensor([2, 1, 0]), (64, 64), (16, 16))
    assert weights.tolist() == [1, 1, 0] and heatmaps[2].abs().sum() == 0
    decoded, scores = udp.decode(heatmaps[None], (64, 64))
    torch.testing.assert_close(decoded[0, :2], kpts[:2], atol=1e-3, rtol=0)
    assert scores[0, :2].min() > 0.9 and scores[0, 2] == 0
    # UDP: mirroring the heatmap is exactly mirroring the input, x -> (W - 1) - x.
    mirrored, _ = udp.decode(heatmaps.flip(-1)[None], (64, 64))
    torch.testing.assert_close(mirrored[0, :2, 0], 63 - kpts[:2, 0], atol=1e-3, rtol=0)


def test_oks_ap_is_one_for_perfect_keypoints_and_falls_with_noise():
    rng = np.random.default_rng(0)
    n, k = 20, keypoints308.NUM_KEYPOINTS
    gt = rng.uniform(0, 200, (n, k, 2))
    visible = (rng.uniform(size=(n, k)) < 0.8).astype(float)
    area = np.full(n, 200.0 * 200)
    assert np.allclose(oks(gt, gt, visible, area, keypoints308.SIGMAS), 1.0)
    results = []
    for noise in (0.0, 1.0, 3.0, 10.0):
        metric = OKSMetric(keypoints308.SIGMAS, keypoints308.GROUPS)
        metric.update(gt + rng.normal(0, noise, gt.shape), np.ones((n, k)), gt, visible, area)
        results.append(metric.compute())
    assert results[0]["AP"] == 1.0 and results[0]["AR"] == 1.0 and results[0]["face_AP"] == 1.0
    aps = [r["AP"] for r in results]
    assert aps == sorted(aps, reverse=True) and aps[2] < aps[1] and aps[-1] < 0.1
    # Noise hurts the tight face sigmas before the loose body ones.
    assert results[2]["face_AP"] < results[2]["body_AP"] and results[3]["face_AP"] < results[3]["body_AP"]


def test_oks_by_hand():
    # One keypoint, sigma 0.1 (k = 0.2), area 100 (s = 10), off by 2 px: exp(-4 / (2 * 100 * 0.04)).
    value = oks(
        np.array([[[2.0, 0.0]]]), np.zeros((1, 1, 2)), np.ones((1, 1)), np.array([100.0]), np.array([0.1])
    )
    assert value[0] == pytest.approx(math.exp(-0.5))


def test_miou_matches_a_manual_count():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 2, 2, 0]]])
    metric = SegMetric(3)
    metric.update(pred, labels)
    out = metric.compute()
    # class 0: inter 2 (pixels 0,0 and 1,0), union 3 (gt 3 ... pred 2 in valid) -> 2/3
    # class 1: gt {0,2},{0,3},{1,2}; pred {0,1},{0,2},{0,3}: inter 2, union 4 -> 1/2
    # class 2: gt {1,1}; pred {1,1},{1,2}: inter 1, union 2 -> 1/2 ; the 255 pixel is ignored
    assert out["IoU_0"] == pytest.approx(2 / 3)
    assert out["IoU_1"] == pytest.approx(1 / 2)
    assert out["IoU_2"] == pytest.approx(1 / 2)
    assert out["mIoU"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert out["pixel_acc"] == pytest.approx(5 / 7)


def test_angular_error_of_known_normals():
    target = torch.zeros(1, 3, 1, 4)
    target[:, 2] = 1  # facing the camera
    angles = torch.tensor([0.0, 10.0, 20.0, 45.0])
    pred = torch.stack([torch.sin(torch.deg2rad(angles)), torch.zeros(4), torch.cos(torch.deg2rad(angles))])[
        None, :, None
    ]
    metric = NormalMetric()
    metric.update(pred, target, torch.ones(1, 1, 1, 4))
    out = metric.compute()
    assert out["mean_angular_error"] == pytest.approx(18.75, abs=1e-3)
    assert out["median_angular_error"] == pytest.approx(10.0, abs=1e-3)  # torch's lower median
    assert out["within_11.25"] == pytest.approx(50.0) and out["within_30"] == pytest.approx(75.0)


def test_pointmap_and_albedo_metrics_by_hand():
    gt = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    metric = PointmapMetric()
    # Canonical points at half the size with log-scale log 2 are exactly the ground truth.
    metric.update(gt / 2, torch.tensor([math.log(2)]), gt, torch.zeros(1), torch.ones(1, 1, 2, 2))
    assert metric.compute()["L2"] == pytest.approx(0, abs=1e-6)
    metric = PointmapMetric()
    metric.update(gt * 1.1, torch.zeros(1), gt, torch.zeros(1), torch.ones(1, 1, 2, 2))
    out = metric.compute()
    assert out["depth_abs_rel"] == pytest.approx(0.1) and out["L2"] == pytest.approx(0.1 * math.sqrt(21))
    albedo = AlbedoMetric()
    albedo.update(torch.full((1, 3, 2, 2), 0.6), torch.full((1, 3, 2, 2), 0.5), torch.ones(1, 1, 2, 2))
    assert albedo.compute()["MAE"] == pytest.approx(0.1) and albedo.compute()["PSNR"] == pytest.approx(20.0)
