"""Class-weighted cross-entropy plus soft Dice for body-part segmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from curation.training.heads.body_parts import IGNORE_INDEX


def dice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """1 - mean soft Dice over the classes present in the batch, ignoring IGNORE_INDEX pixels."""
    valid = labels != IGNORE_INDEX  # [B, H, W]
    probs = logits.float().softmax(dim=1) * valid[:, None]  # [B, C, H, W]
    onehot = F.one_hot(labels.where(valid, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid[:, None]
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


def seg_loss(logits: Tensor, labels: Tensor, class_weights: Tensor | None = None, dice_weight: float = 1.0):
    """logits [B, C, H, W]; labels [B, H, W] int64 with IGNORE_INDEX for unlabelled pixels."""
    ce = F.cross_entropy(logits.float(), labels, weight=class_weights, ignore_index=IGNORE_INDEX)
    dice = dice_loss(logits, labels)
    ce = torch.nan_to_num(ce)  # every pixel ignored: no signal rather than NaN
    return {"loss": ce + dice_weight * dice, "ce": ce.detach(), "dice": dice.detach()}
