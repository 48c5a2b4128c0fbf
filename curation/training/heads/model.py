"""Backbone + task head, built from a pretraining checkpoint (or, when asked by name, untrained)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from curation.training.backbone import Sapiens2ViT, build_backbone
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


def backbone_from_checkpoint(path: str | Path) -> tuple[Sapiens2ViT, str]:
    """The student backbone of a pretraining checkpoint (or of a head checkpoint), and its model name."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state["config"]
    name = config["model"]["name"]
    if "student" in state:  # pretraining: student.backbone.*
        weights = {
            k.removeprefix("backbone."): v for k, v in state["student"].items() if k.startswith("backbone.")
        }
        window_layers = config["model"].get("window_layers")
    else:  # a head checkpoint: its own backbone
        weights, window_layers = state["backbone"], None
    backbone = build_backbone(name, window_layers=window_layers)
    backbone.load_state_dict(weights)
    return backbone, name


def build_task_model(cfg) -> TaskModel:
    if cfg.model.init == "random":
        backbone = build_backbone(cfg.model.name)
    else:
        backbone, cfg.model.name = backbone_from_checkpoint(cfg.model.backbone)
    head = TASKS[cfg.task].head(backbone.dim, cfg)
    return TaskModel(backbone, head, frozen=cfg.model.mode == "frozen")
