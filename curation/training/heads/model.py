"""Backbone + task head, built from a pretraining checkpoint (or, when asked by name, untrained)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from curation.config import ConfigError
from curation.training.backbone import Sapiens2ViT, arch_options, build_backbone, read_backbone_weights
from curation.training.heads.config import output_scale
from curation.training.heads.tasks import TASKS


class TaskModel(nn.Module):
    """`forward(images)` -> the task's raw output. In frozen mode the backbone runs without autograd
    (its features are computed once per batch and nothing of it is stored for backward) and only
    the head trains."""

    def __init__(self, backbone: Sapiens2ViT, head: nn.Module, frozen: bool = False):
        super().__init__()
        self.backbone, self.head, self.frozen = backbone, head, frozen
        if frozen:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, images: Tensor):
        if self.frozen:
            with torch.no_grad():
                features = self.backbone.feature_map(images)  # [B, D, h, w]
        else:
            features = self.backbone.feature_map(images)
        return self.head(features)


def window_layers_of(backbone: Sapiens2ViT) -> int:
    """The local-stage depth the backbone was built with (0 without one): a name alone does not
    say it, since pretraining may override the 4K variant's default."""
    return len(backbone.window_stage.blocks) if backbone.window_stage is not None else 0


def backbone_from_checkpoint(path: str | Path) -> tuple[Sapiens2ViT, str]:
    """The student backbone of a pretraining checkpoint (or of a head checkpoint), and its model name."""
    weights, model_cfg = read_backbone_weights(path)
    name = model_cfg["name"]
    backbone = build_backbone(name, window_layers=model_cfg.get("window_layers"), **arch_options(model_cfg))
    backbone.load_state_dict(weights)
    return backbone, name


def build_task_model(cfg) -> TaskModel:
    """Backbone + head of `cfg.task`. `cfg.model.name`, `window_layers`, the architecture options and
    `output_scale` are set to what was built, so that a saved config rebuilds the same model."""
    if cfg.model.init == "random":
        options = arch_options(dataclasses.asdict(cfg.model))
        backbone = build_backbone(cfg.model.name, window_layers=cfg.model.window_layers, **options)
    else:
        backbone, cfg.model.name = backbone_from_checkpoint(cfg.model.backbone)
    cfg.model.window_layers = window_layers_of(backbone)
    for key, value in backbone.arch_options.items():
        setattr(cfg.model, key, value)
    stride = backbone.token_stride
    if any(s % stride for s in cfg.data.input_size):
        raise ConfigError(
            f"data.input_size {cfg.data.input_size} must be multiples of {stride}, the token stride of "
            f"{cfg.model.name}" + (" with its window stage" if cfg.model.window_layers else "")
        )
    cfg.model.output_scale = output_scale(cfg)
    upsample = stride * cfg.model.output_scale  # token grid -> output maps
    if upsample < 2 or upsample != 2 ** round(math.log2(upsample)):
        raise ConfigError(
            f"model.output_scale {cfg.model.output_scale} on a token stride of {stride} gives an upsampling "
            f"of {upsample:g}; it must be a power of 2 from 2 up"
        )
    head = TASKS[cfg.task].head(backbone.dim, cfg, int(upsample))
    return TaskModel(backbone, head, frozen=cfg.model.mode == "frozen")
