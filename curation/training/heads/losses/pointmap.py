"""Pointmap: L1 on canonical-camera points normalised by depth, plus the log-scale loss."""

from __future__ import annotations

from torch import Tensor


def pointmap_loss(pred: dict[str, Tensor], target: Tensor, log_scale: Tensor, mask: Tensor, scale_weight: float = 1.0):
    """pred: points [B, 3, H, W] (canonical camera), log_scale [B]; target [B, 3, H, W] canonical
    points; log_scale [B] = log(f / f_canonical); mask [B, 1, H, W].

    Dividing the error by the target depth weighs near and far points alike (relative error)."""
    points = pred["points"].float()
    depth = target[:, 2:3].clamp(min=1e-3)
    n = mask.sum().clamp(min=1)
    l1 = ((points - target).abs() / depth * mask).sum() / (3 * n)
    scale = (pred["log_scale"].float() - log_scale).abs().mean()
    return {"loss": l1 + scale_weight * scale, "points_l1": l1.detach(), "scale": scale.detach()}
