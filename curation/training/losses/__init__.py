"""Pretraining losses, one per file (dinov2 `loss/` style). MAE's loss lives with MAE in mae.py."""

from curation.training.losses.dino_cls_loss import DINOClsLoss
from curation.training.losses.koleo import koleo_loss

__all__ = ["DINOClsLoss", "koleo_loss"]
