"""Segmentation: per-class IoU from an accumulated confusion matrix, and their mean (mIoU)."""

from __future__ import annotations

import torch
from torch import Tensor

from curation.training.heads.body_parts import IGNORE_INDEX


class SegMetric:
    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.names = class_names or [str(i) for i in range(num_classes)]
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [gt, pred]

    def update(self, pred: Tensor, labels: Tensor) -> None:
        """pred, labels [B, H, W] class ids; labels may hold IGNORE_INDEX."""
        valid = labels != IGNORE_INDEX
        idx = labels[valid].long() * self.num_classes + pred[valid].long()
        self.confusion += torch.bincount(idx.cpu(), minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, float]:
        c = self.confusion.double()
        inter = c.diag()
        union = c.sum(0) + c.sum(1) - inter
        present = union > 0  # a class neither labelled nor predicted does not count
        iou = torch.where(present, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
        out = {"mIoU": iou[present].mean().item() if present.any() else float("nan")}
        out["pixel_acc"] = (inter.sum() / c.sum().clamp(min=1)).item()
        out.update({f"IoU_{name}": iou[i].item() for i, name in enumerate(self.names)})
        return out
