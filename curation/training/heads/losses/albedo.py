"""Albedo: L1 + gradient matching + chromaticity (colour direction, independent of brightness)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from curation.training.heads.losses.gradient import gradient_loss


def albedo_loss(pred: Tensor, target: Tensor, mask: Tensor, grad_weight: float = 1.0, chroma_weight: float = 1.0):
    """pred, target [B, 3, H, W] in [0, 1]; mask [B, 1, H, W]."""
    pred = pred.float()
    n = mask.sum().clamp(min=1)
    l1 = ((pred - target).abs() * mask).sum() / (3 * n)
    grad = gradient_loss(pred, target, mask)
    # Chromaticity: the RGB direction. Intrinsic decomposition is ambiguous in overall brightness,
    # much less so in hue, so the colour direction gets its own term.
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6)[:, None]  # [B, 1, H, W]
    chroma = ((1 - cos) * mask).sum() / n
    loss = l1 + grad_weight * grad + chroma_weight * chroma
    return {"loss": loss, "l1": l1.detach(), "grad": grad.detach(), "chroma": chroma.detach()}
