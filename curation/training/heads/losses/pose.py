"""Heatmap MSE with per-keypoint target weights, plus online hard keypoint mining (OHKM)."""

from __future__ import annotations

from torch import Tensor


def pose_loss(heatmaps: Tensor, target: Tensor, weights: Tensor, ohkm_topk: int = 8, ohkm_weight: float = 1.0):
    """heatmaps, target [B, K, h, w]; weights [B, K] (0 for unlabelled or off-crop keypoints)."""
    per_kpt = (heatmaps.float() - target).pow(2).mean(dim=(2, 3)) * weights  # [B, K]
    mse = per_kpt.sum() / weights.sum().clamp(min=1)
    # OHKM (Chen et al., CPN): also average the k hardest keypoints of each sample.
    k = min(ohkm_topk, per_kpt.shape[1])
    hard = per_kpt.topk(k, dim=1).values.mean(dim=1).mean()
    return {"loss": mse + ohkm_weight * hard, "mse": mse.detach(), "ohkm": hard.detach()}
