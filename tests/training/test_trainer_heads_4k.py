"""Heads on the 4K variant (a token per 64 pixels after window pooling), and head checkpoints that
rebuild a backbone whose window-stage depth was overridden."""

from __future__ import annotations

import pytest
import torch

from curation.config import ConfigError
from curation.training import trainer
from curation.training.checkpoint import read_checkpoint
from curation.training.data.shards import iter_shard, resolve_shards
from curation.training.heads.evaluate import evaluate, load_head_checkpoint
from curation.training.heads.labels import TaskDecoder
from curation.training.heads.model import build_task_model
from curation.training.heads.tasks import TASKS
from curation.training.heads.trainer import train_head

pytestmark = pytest.mark.timeout(120)

SIZE = 128  # 2 x 2 pooled tokens: the smallest 4K grid with more than one token per side


def _batch(cfg, manifest, n=2) -> dict:
    decode = TaskDecoder(cfg, train=False)
    raws = list(iter_shard(resolve_shards(str(manifest))[0].url))[:n]
    samples = [decode(raw, torch.Generator().manual_seed(0)) for raw in raws]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


@pytest.mark.parametrize("task", list(TASKS))
def test_heads_on_the_4k_grid_decode_at_half_the_input_like_their_labels(task, labelled, head_config):
    cfg = head_config(task, model={"name": "sapiens2-tiny-4k"}, data={"input_size": [SIZE, SIZE]})
    torch.manual_seed(0)
    model = build_task_model(cfg)
    assert model.backbone.token_stride == 64 and cfg.model.window_layers == 1
    assert cfg.model.output_scale == 0.5  # the paper's 4K models decode at 2K
    batch = _batch(cfg, labelled(task))
    out = model(batch["image"])
    target = {"pose": "heatmaps", "seg": "labels", "normal": "normals", "albedo": "albedo"}.get(task, "points")
    pred = out["points"] if task == "pointmap" else out
    # Dense maps at half the input resolution, pose heatmaps at 1/4 of that: the labels' shapes.
    out_size = SIZE // 2
    assert pred.shape[-2:] == batch[target].shape[-2:] == ((out_size // 4,) * 2 if task == "pose" else (out_size,) * 2)
    assert batch["image"].shape[-2:] == (SIZE, SIZE)
    losses = TASKS[task].loss(out, batch, cfg)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    losses["loss"].backward()
    # The gradient reaches through the head into the window stage that made the coarse grid.
    assert model.backbone.window_stage.window_cls.grad.abs().sum() > 0


def test_an_input_size_off_the_4k_grid_is_a_config_error(head_config):
    cfg = head_config("seg", model={"name": "sapiens2-tiny-4k"}, data={"input_size": [96, 128]})
    with pytest.raises(ConfigError, match="multiples of 64"):
        build_task_model(cfg)


def test_a_head_checkpoint_rebuilds_an_overridden_window_stage(tmp_path, shards, tiny_config, labelled, head_config):
    # Pretraining with 2 window layers where the tiny 4K size defaults to 1: the name alone would
    # rebuild a different architecture, so the head checkpoint has to carry the override.
    pre = tiny_config(
        shards, "model.name=sapiens2-tiny-4k", "model.window_layers=2", "train.steps=1",
        "data.global_size=[128,128]", "data.local_size=[64,64]",
    )  # fmt: skip
    trainer.pretrain(pre, tmp_path / "pre")
    cfg = head_config(
        "normal", labelled("normal"), train={"steps": 2},
        model={"init": "checkpoint", "backbone": str(tmp_path / "pre" / "checkpoint-last")},
        data={"input_size": [SIZE, SIZE]},
    )  # fmt: skip
    train_head(cfg, tmp_path / "head")
    assert cfg.model.window_layers == 2

    model, loaded = load_head_checkpoint(tmp_path / "head" / "checkpoint-last")
    assert loaded.model.name == "sapiens2-tiny-4k" and loaded.model.window_layers == 2
    assert loaded.model.output_scale == 0.5
    # Evaluation decodes labels at the output resolution the checkpoint records: the shapes agree.
    metrics = evaluate(model, loaded, str(labelled("normal")))
    assert metrics["samples"] == 4 and 0 <= metrics["mean_angular_error"] <= 180
    assert len(model.backbone.window_stage.blocks) == 2
    state = read_checkpoint(tmp_path / "head" / "checkpoint-last")
    rebuilt = {"backbone": model.backbone.state_dict(), "head": model.head.state_dict()}
    for part in ("backbone", "head"):
        assert rebuilt[part].keys() == state[part].keys()
        for k, v in state[part].items():
            torch.testing.assert_close(rebuilt[part][k], v, rtol=0, atol=0)
    # A head trained from the head checkpoint's own backbone keeps the override as well.
    again = head_config("normal", model={"init": "checkpoint", "backbone": str(tmp_path / "head" / "checkpoint-last")},
                        data={"input_size": [SIZE, SIZE]})  # fmt: skip
    assert len(build_task_model(again).backbone.window_stage.blocks) == 2


def test_the_plain_backbone_decodes_at_the_input_resolution_and_the_scale_is_an_option(labelled, head_config):
    cfg = head_config("seg", data={"input_size": [64, 64]})
    model = build_task_model(cfg)
    assert cfg.model.output_scale == 1.0
    assert model(torch.zeros(1, 3, 64, 64)).shape[-2:] == (64, 64)
    half = head_config("seg", model={"output_scale": 0.5}, data={"input_size": [64, 64]})
    assert build_task_model(half)(torch.zeros(1, 3, 64, 64)).shape[-2:] == (32, 32)
    assert _batch(half, labelled("seg"))["labels"].shape[-2:] == (32, 32)
    with pytest.raises(ConfigError, match="power of 2"):
        build_task_model(head_config("seg", model={"output_scale": 0.1}, data={"input_size": [64, 64]}))
