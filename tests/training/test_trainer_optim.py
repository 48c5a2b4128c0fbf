"""The optimiser side of the loop: layer-wise LR decay groups, the warmup + cosine schedule at known
steps, and gradient clipping bounding the norm the optimiser actually steps with."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from curation.training import trainer
from curation.training.config import OptimConfig
from curation.training.heads import trainer as head_trainer
from curation.training.heads.model import build_task_model
from curation.training.optim import build_optimizer, build_scheduler, param_groups
from curation.training.schedules import warmup_cosine

pytestmark = pytest.mark.timeout(120)

DECAY = 0.5  # far from 1, so that neighbouring depths get clearly different scales


def _expected_scale(name: str, depth: int) -> float:
    """The documented rule: embeddings (and the 4K window stage) at depth 0, block i at i + 1,
    the final norm and every head parameter at depth + 1; scale = decay ** (depth + 1 - layer)."""
    if not name.startswith("backbone."):
        layer = depth + 1
    elif name.startswith(
        ("backbone.patch_embed", "backbone.cls_token", "backbone.register_tokens", "backbone.window_stage")
    ):
        layer = 0
    elif name.startswith("backbone.blocks."):
        layer = int(name.split(".")[2]) + 1
    else:
        layer = depth + 1
    return DECAY ** (depth + 1 - layer)


@pytest.mark.parametrize("name", ["sapiens2-tiny", "sapiens2-tiny-4k"])
def test_layer_decay_groups_scale_each_depth(name, head_config):
    model = build_task_model(head_config("seg", model={"name": name}, data={"input_size": [64, 64]}))
    depth = model.backbone.depth
    groups = param_groups(model, model.backbone, weight_decay=0.05, layer_decay=DECAY)
    seen = {n: g for g in groups for n in g["names"]}
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())  # each parameter once
    for n, group in seen.items():
        assert group["lr_scale"] == pytest.approx(_expected_scale(n, depth)), n
    assert seen["backbone.patch_embed.weight"]["lr_scale"] == pytest.approx(DECAY ** (depth + 1))
    assert seen["backbone.blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(DECAY**depth)
    assert seen[f"backbone.blocks.{depth - 1}.attn.qkv.weight"]["lr_scale"] == pytest.approx(DECAY)
    assert seen["head.out.weight"]["lr_scale"] == 1.0
    # No weight decay on norms, biases, tokens and LayerScale; decay on matrices and convs.
    for n in ("backbone.cls_token", "backbone.register_tokens", "backbone.norm.weight", "head.out.bias"):
        assert seen[n]["weight_decay"] == 0.0, n
    assert any(n.endswith("gamma") for n in seen) and all(
        seen[n]["weight_decay"] == 0.0 for n in seen if n.endswith("gamma")
    )
    assert seen["backbone.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    if name.endswith("-4k"):
        assert seen["backbone.window_stage.window_cls"]["lr_scale"] == pytest.approx(DECAY ** (depth + 1))


def test_frozen_backbone_leaves_only_the_head_at_full_lr(head_config):
    model = build_task_model(head_config("normal", model={"mode": "frozen"}))
    groups = param_groups(model, model.backbone, weight_decay=0.05, layer_decay=DECAY)
    names = [n for g in groups for n in g["names"]]
    assert names and all(n.startswith("head.") for n in names)
    assert {g["lr_scale"] for g in groups} == {1.0}


def test_warmup_cosine_at_known_steps():
    def f(step):
        return warmup_cosine(step, total_steps=110, warmup_steps=10, peak=1.0, final=0.1)

    # Linear warmup reaching the peak on the last warmup step, then a half cosine over 100 steps.
    expected = {
        0: 0.1,
        4: 0.5,
        9: 1.0,
        10: 1.0,
        35: 0.1 + 0.45 * (1 + math.cos(math.pi / 4)),
        60: 0.55,
        110: 0.1,
        500: 0.1,
    }
    for step, value in expected.items():
        assert f(step) == pytest.approx(value, abs=1e-12), step
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # never rises after warmup


def test_scheduler_applies_the_curve_to_every_layer_decayed_group(head_config):
    model = build_task_model(head_config("albedo"))
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, layer_decay=DECAY)
    optimizer = build_optimizer(model, model.backbone, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps=110)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    assert min(scales) == pytest.approx(DECAY ** (model.backbone.depth + 1)) and max(scales) == 1.0
    checkpoints = {0, 4, 9, 10, 35, 60, 110}
    for step in range(111):
        if step in checkpoints:
            factor = warmup_cosine(step, 110, 10, 1.0, 0.1)
            for group in optimizer.param_groups:
                assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"] * factor, rel=1e-9), step
        optimizer.step()  # no gradients: a no-op that keeps the step order the loop uses
        scheduler.step()


def _record_step_norms(monkeypatch, module) -> list[float]:
    """Patch `module.build_optimizer` so that every optimizer step first records the global norm
    of the gradients it is about to apply."""
    norms: list[float] = []
    real = module.build_optimizer

    def build(*args, **kwargs):
        optimizer = real(*args, **kwargs)

        def hook(opt, _args, _kwargs):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            )

        optimizer.register_step_pre_hook(hook)
        return optimizer

    monkeypatch.setattr(module, "build_optimizer", build)
    return norms


CLIP = 1e-3  # far below the tiny models' natural gradient norms


def test_pretraining_clips_the_gradient_norm(tmp_path, shards, tiny_config, monkeypatch):
    norms = _record_step_norms(monkeypatch, trainer)
    trainer.pretrain(tiny_config(shards, "train.steps=2", "optim.clip_grad=0"), tmp_path / "free")
    free, norms[:] = list(norms), []
    trainer.pretrain(tiny_config(shards, "train.steps=2", f"optim.clip_grad={CLIP}"), tmp_path / "clipped")
    assert len(free) == len(norms) == 2
    assert min(free) > 10 * CLIP  # unclipped, the norms are far above the bound: the test can fail
    assert max(norms) <= CLIP * (1 + 1e-4), norms


def test_head_training_clips_the_gradient_norm(tmp_path, labelled, head_config, monkeypatch):
    norms = _record_step_norms(monkeypatch, head_trainer)
    head_trainer.train_head(
        head_config("seg", labelled("seg"), train={"steps": 2}, optim={"clip_grad": 0.0}), tmp_path / "free"
    )
    free, norms[:] = list(norms), []
    cfg = head_config("seg", labelled("seg"), train={"steps": 2}, optim={"clip_grad": CLIP})
    head_trainer.train_head(cfg, tmp_path / "clipped")
    assert min(free) > 10 * CLIP
    assert len(norms) == 2 and max(norms) <= CLIP * (1 + 1e-4), norms
