"""Gradient-matching loss: L1 between the spatial finite differences of prediction and target.

Penalises blurry or offset edges that a per-pixel loss averages away."""

from __future__ import annotations

from torch import Tensor


def gradient_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """pred, target [B, C, H, W]; mask [B, 1, H, W] (1 = valid). Both pixels of a difference must be valid."""
    loss, count = pred.new_zeros(()), pred.new_zeros(())
    for dim in (-1, -2):
        dp, dt = pred.diff(dim=dim), target.diff(dim=dim)
        m = mask.narrow(dim, 0, mask.shape[dim] - 1) * mask.narrow(dim, 1, mask.shape[dim] - 1)
        loss = loss + ((dp - dt).abs() * m).sum()
        count = count + m.sum() * pred.shape[1]
    return loss / count.clamp(min=1)
