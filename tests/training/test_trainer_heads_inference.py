"""Predictor (outputs at the image's resolution), TorchScript export (matches eager), frozen mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation.training.heads import keypoints308
from curation.training.heads.evaluate import load_head_checkpoint
from curation.training.heads.predictor import ExportWrapper, Predictor
from curation.training.heads.trainer import train_head

pytestmark = pytest.mark.timeout(120)


def _train(task, tmp_path, labelled, head_config, **sections):
    cfg = head_config(task, labelled(task), train={"steps": 3}, **sections)
    train_head(cfg, tmp_path / task)
    return tmp_path / task / "checkpoint-last"


@pytest.mark.parametrize("task", ["seg", "normal", "albedo", "pointmap"])
def test_predictor_returns_the_image_resolution_and_export_matches_eager(
    task, tmp_path, labelled, head_config, photos
):
    ckpt = _train(task, tmp_path, labelled, head_config)
    predictor = Predictor.from_checkpoint(ckpt)
    image = photos[0].resize((90, 70))
    out = predictor(image)
    expected = {"seg": (70, 90), "normal": (70, 90, 3), "albedo": (70, 90, 3), "pointmap": (70, 90, 3)}[task]
    assert out.shape == expected
    if task == "seg":
        assert out.dtype == np.uint8 and out.max() < 29
    if task == "normal":
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-4)

    path = predictor.export(tmp_path / f"{task}.pt")
    exported = torch.jit.load(str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager, traced = ExportWrapper(predictor.model)(x), exported(x)
    for a, b in zip(
        eager if isinstance(eager, tuple) else (eager,), traced if isinstance(traced, tuple) else (traced,)
    ):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def test_pose_predictor_maps_keypoints_back_to_the_image(tmp_path, labelled, head_config, photos):
    ckpt = _train("pose", tmp_path, labelled, head_config)
    predictor = Predictor.from_checkpoint(ckpt, flip_test=True)
    image = np.asarray(photos[1].resize((160, 120)))
    box = (40.0, 20.0, 100.0, 110.0)
    keypoints, scores = predictor(image, box=box)
    assert keypoints.shape == (keypoints308.NUM_KEYPOINTS, 2) and scores.shape == (
        keypoints308.NUM_KEYPOINTS,
    )
    # Every heatmap cell maps back inside the padded box's crop window, in image pixels.
    cx, cy, half = 70.0, 65.0, 0.5 * 90 * 1.25
    assert (np.abs(keypoints[:, 0] - cx) <= half + 1).all() and (
        np.abs(keypoints[:, 1] - cy) <= half + 1
    ).all()
    exported = torch.jit.load(str(predictor.export(tmp_path / "pose.pt")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), predictor.model(x), atol=1e-4, rtol=0)


def test_frozen_mode_trains_only_the_head(tmp_path, labelled, head_config):
    ckpt = _train("albedo", tmp_path, labelled, head_config, model={"mode": "frozen"})
    model, cfg = load_head_checkpoint(ckpt)
    assert cfg.model.mode == "frozen"
    torch.manual_seed(0)  # the untrained model of the same seed, as train_head builds it
    from curation.training.heads.model import build_task_model

    initial = build_task_model(cfg)
    for (name, a), b in zip(model.backbone.state_dict().items(), initial.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(model.head.parameters(), initial.head.parameters()))
