"""Metrics for normals (angular error), pointmaps (L2 and depth errors) and albedo (MAE, PSNR)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class NormalMetric:
    def __init__(self):
        self.errors: list[Tensor] = []

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """pred, target [B, 3, H, W] unit vectors; mask [B, 1, H, W]."""
        cos = (pred.float() * target).sum(1).clamp(-1, 1)  # [B, H, W]
        self.errors.append(torch.rad2deg(torch.acos(cos))[mask[:, 0] > 0].cpu())

    def compute(self) -> dict[str, float]:
        e = torch.cat(self.errors).double()
        return {
            "mean_angular_error": e.mean().item(),
            "median_angular_error": e.median().item(),
            **{f"within_{t}": (e < t).double().mean().item() * 100 for t in (11.25, 22.5, 30)},
        }


class PointmapMetric:
    """Metric points (canonical points x predicted scale) against the ground truth, in its units."""

    def __init__(self):
        self.l2, self.abs_rel, self.delta1 = [], [], []

    def update(self, points: Tensor, log_scale: Tensor, target: Tensor, target_log_scale: Tensor, mask: Tensor):
        pred = points.float() * log_scale.float().exp()[:, None, None, None]  # [B, 3, H, W] metric
        gt = target * target_log_scale.exp()[:, None, None, None]
        m = mask[:, 0] > 0
        self.l2.append((pred - gt).norm(dim=1)[m].cpu())
        z_pred, z_gt = pred[:, 2][m].clamp(min=1e-6), gt[:, 2][m]
        self.abs_rel.append(((z_pred - z_gt).abs() / z_gt).cpu())
        self.delta1.append((torch.maximum(z_pred / z_gt, z_gt / z_pred) < 1.25).double().cpu())

    def compute(self) -> dict[str, float]:
        return {
            "L2": torch.cat(self.l2).double().mean().item(),
            "depth_abs_rel": torch.cat(self.abs_rel).double().mean().item(),
            "depth_delta1": torch.cat(self.delta1).mean().item() * 100,
        }


class AlbedoMetric:
    def __init__(self):
        self.abs_sum = self.sq_sum = self.count = 0.0

    def update(self, pred: Tensor, target: Tensor, mask: Tensor) -> None:
        """pred, target [B, 3, H, W] in [0, 1]; mask [B, 1, H, W]."""
        diff = (pred.float() - target) * mask
        self.abs_sum += diff.abs().sum().item()
        self.sq_sum += diff.pow(2).sum().item()
        self.count += mask.sum().item() * 3

    def compute(self) -> dict[str, float]:
        mse = self.sq_sum / max(self.count, 1)
        return {"MAE": self.abs_sum / max(self.count, 1), "PSNR": 10 * math.log10(1 / max(mse, 1e-12))}
