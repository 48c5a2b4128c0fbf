"""Object keypoint similarity and COCO-style keypoint AP / AR, overall and per part group.

OKS = mean over labelled keypoints of exp(-d^2 / (2 s^2 k^2)) with s^2 the person's box area and
k = 2 sigma (the COCO definition). Top-down evaluation has one prediction per ground-truth person,
scored by its mean keypoint confidence. AP averages, over OKS thresholds 0.50:0.05:0.95, the
101-point interpolated precision over recall; AR averages the recall.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = np.linspace(0.5, 0.95, 10)


def oks(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """pred, gt [N, K, 2]; visible [N, K]; area [N]; sigmas [K] -> OKS [N] (NaN with no labelled keypoint)."""
    d2 = ((pred - gt) ** 2).sum(-1)  # [N, K]
    k2 = (2 * sigmas) ** 2
    e = d2 / (2 * k2[None] * np.maximum(area, 1e-9)[:, None])
    labelled = visible > 0
    count = labelled.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (np.exp(-e) * labelled).sum(-1) / count, np.nan)


def average_precision(scores: np.ndarray, similarity: np.ndarray) -> tuple[float, float]:
    """AP and AR over THRESHOLDS for one detection per ground truth."""
    keep = ~np.isnan(similarity)
    if not keep.any():
        return float("nan"), float("nan")
    ap = float(np.mean([average_precision_at(scores, similarity, t) for t in THRESHOLDS]))
    ar = float(np.mean([(similarity[keep] >= t).mean() for t in THRESHOLDS]))
    return ap, ar


class OKSMetric:
    def __init__(self, sigmas: np.ndarray, groups: dict[str, list[int]] | None = None):
        self.sigmas, self.groups = sigmas, groups or {}
        self.pred, self.gt, self.visible, self.area, self.scores = [], [], [], [], []

    def update(self, pred, scores, gt, visible, area) -> None:
        """pred, gt [B, K, 2]; scores, visible [B, K]; area [B] (the box area in the same pixels)."""
        for name, x in (("pred", pred), ("scores", scores), ("gt", gt), ("visible", visible), ("area", area)):
            getattr(self, name).append(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float64))

    def compute(self) -> dict[str, float]:
        pred, gt = np.concatenate(self.pred), np.concatenate(self.gt)
        visible, area, scores = (
            np.concatenate(self.visible),
            np.concatenate(self.area),
            np.concatenate(self.scores),
        )
        out = {}
        for name, idx in {"": list(range(gt.shape[1])), **self.groups}.items():
            sim = oks(pred[:, idx], gt[:, idx], visible[:, idx], area, self.sigmas[idx])
            ap, ar = average_precision(scores[:, idx].mean(-1), sim)
            prefix = f"{name}_" if name else ""
            out[f"{prefix}AP"], out[f"{prefix}AR"] = ap, ar
            if not name:
                t50 = average_precision_at(scores[:, idx].mean(-1), sim, 0.5)
                out["AP50"] = t50
        return out


def average_precision_at(scores: np.ndarray, similarity: np.ndarray, threshold: float) -> float:
    keep = ~np.isnan(similarity)
    if not keep.any():
        return float("nan")
    order = np.argsort(-scores[keep], kind="stable")
    hit = similarity[keep][order] >= threshold
    tp = np.cumsum(hit)
    recall, precision = tp / len(hit), tp / np.arange(1, len(hit) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0).mean())
