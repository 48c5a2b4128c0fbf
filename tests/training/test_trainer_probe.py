"""`curate train probe`: k-NN and linear probes on [CLS] (lfw_subset), a dense probe on seg shards."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from curation.training.probe import knn_accuracy, lfw_images, linear_accuracy, seg_patches, stratified_halves

pytestmark = pytest.mark.timeout(120)


def test_lfw_subset_is_100_faces_and_100_non_faces_split_evenly():
    images, labels = lfw_images(32)
    assert images.shape == (200, 3, 32, 32) and labels.sum() == 100
    train, test = stratified_halves(labels, seed=0)
    assert len(train) == len(test) == 100 and labels[train].sum() == labels[test].sum() == 50
    assert set(train.tolist()).isdisjoint(test.tolist())


def test_the_probes_score_separable_features_high_and_noise_at_chance():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    separable = torch.randn(200, 16, generator=gen)
    separable[:, :4] += 4.0 * (2 * y[:, None] - 1)  # the classes lie in opposite directions
    noise = torch.randn(200, 16, generator=gen)
    tr, te = stratified_halves(y, seed=0)
    assert knn_accuracy(separable[tr], y[tr], separable[te], y[te]) > 0.95
    assert linear_accuracy(separable[tr], y[tr], separable[te], y[te])[0] > 0.95
    assert 0.3 < knn_accuracy(noise[tr], y[tr], noise[te], y[te]) < 0.7
    assert 0.3 < linear_accuracy(noise[tr], y[tr], noise[te], y[te])[0] < 0.7


def test_seg_patches_carry_the_majority_label_of_their_pixels(labelled):
    from curation.training.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("sapiens2-tiny").eval()
    f, y, ids = seg_patches(backbone, str(labelled("seg")), size=64)
    assert f.shape[1] == 64 and len(f) == len(y) == len(ids) <= 4 * 16
    assert set(y.unique().tolist()) <= {0, 11, 20, 22}  # the generator's classes, never 255
    assert ids.unique().tolist() == [0, 1, 2, 3]


def test_probe_through_the_cli(tmp_path, labelled, curate_app):
    out = tmp_path / "probe.json"
    args = ["train", "probe", "--checkpoint", "random:sapiens2-tiny", "--data", "lfw_subset"]
    result = CliRunner().invoke(curate_app, [*args, "--data", str(labelled("seg")), "--output", str(out)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    for key in ("lfw_knn_acc", "lfw_linear_acc", "seg_patch_acc", "seg_patch_miou"):
        assert 0.0 <= got[key] <= 1.0
    assert got["seg_patches"] > 0
