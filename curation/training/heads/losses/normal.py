"""Surface normals: angular (1 - cosine) + L1 + gradient matching, on valid pixels."""

from __future__ import annotations

from torch import Tensor

from curation.training.heads.losses.gradient import gradient_loss


def normal_loss(pred: Tensor, target: Tensor, mask: Tensor, l1_weight: float = 1.0, grad_weight: float = 1.0):
    """pred, target [B, 3, H, W] unit vectors; mask [B, 1, H, W]."""
    pred = pred.float()
    n = mask.sum().clamp(min=1)
    cosine = ((1 - (pred * target).sum(dim=1, keepdim=True)) * mask).sum() / n
    l1 = ((pred - target).abs() * mask).sum() / (3 * n)
    grad = gradient_loss(pred, target, mask)
    loss = cosine + l1_weight * l1 + grad_weight * grad
    return {"loss": loss, "cosine": cosine.detach(), "l1": l1.detach(), "grad": grad.detach()}
