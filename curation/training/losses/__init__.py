"""Pretraining losses, one per file (dinov2 `loss/` style). MAE's loss lives with MAE in mae.py."""

from curation.training.losses.dino_cls_loss import DINOClsLoss

__all__ = ["DINOClsLoss"]
