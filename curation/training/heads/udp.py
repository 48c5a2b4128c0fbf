"""UDP heatmap encoding and decoding (Huang et al., "The Devil is in the Details", CVPR 2020).

UDP measures positions in units of the sampling *interval*: an input of W pixels has W - 1
intervals and a heatmap of w pixels w - 1, so the input-to-heatmap scale is (w - 1) / (W - 1),
not w / W. With that, flipping and resizing are exactly invertible, which removes the half-pixel
bias of the naive encoding. Decoding refines the argmax with a second-order step on the
log-heatmap per axis (the DARK refinement without cross terms).
"""

from __future__ import annotations

import torch
from torch import Tensor


def heatmap_scale(input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> Tensor:
    """(sx, sy) mapping input pixel coordinates to heatmap coordinates; sizes are (H, W)."""
    (H, W), (h, w) = input_size, heatmap_size
    return torch.tensor([(w - 1) / (W - 1), (h - 1) / (H - 1)])


def encode(
    keypoints: Tensor,
    visible: Tensor,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """keypoints [K, 2] (x, y in input pixels), visible [K] -> heatmaps [K, h, w], weights [K]."""
    h, w = heatmap_size
    mu = keypoints * heatmap_scale(input_size, heatmap_size)  # [K, 2]
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]  # [1, h, 1]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]  # [1, 1, w]
    d2 = (xs - mu[:, 0, None, None]) ** 2 + (ys - mu[:, 1, None, None]) ** 2  # [K, h, w]
    heatmaps = torch.exp(-d2 / (2 * sigma**2))
    inside = (mu[:, 0] >= -0.5) & (mu[:, 0] <= w - 0.5) & (mu[:, 1] >= -0.5) & (mu[:, 1] <= h - 0.5)
    weights = (visible > 0) & inside
    heatmaps = heatmaps * weights[:, None, None]
    return heatmaps, weights.float()


def decode(heatmaps: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """heatmaps [B, K, h, w] -> keypoints [B, K, 2] in input pixels, scores [B, K] (peak values)."""
    _B, _K, h, w = heatmaps.shape
    flat = heatmaps.flatten(2)  # [B, K, h*w]
    scores, idx = flat.max(dim=-1)
    x, y = (idx % w).float(), (idx // w).float()  # [B, K]
    log = heatmaps.clamp(min=1e-10).log()
    xi, yi = x.long(), y.long()

    def at(dx: int, dy: int) -> Tensor:
        xx, yy = (xi + dx).clamp(0, w - 1), (yi + dy).clamp(0, h - 1)
        return log.flatten(2).gather(-1, (yy * w + xx)[..., None])[..., 0]

    centre = at(0, 0)
    for axis, (minus, plus, size) in enumerate(((at(-1, 0), at(1, 0), w), (at(0, -1), at(0, 1), h))):
        grad = 0.5 * (plus - minus)
        curv = plus - 2 * centre + minus
        pos = x if axis == 0 else y
        interior = (pos > 0) & (pos < size - 1) & (curv < -1e-6)
        step = torch.where(interior, -grad / curv.where(interior, torch.ones_like(curv)), torch.zeros_like(grad))
        pos += step.clamp(-0.5, 0.5)
    keypoints = torch.stack([x, y], dim=-1) / heatmap_scale(input_size, (h, w)).to(heatmaps.device)
    return keypoints, scores


def flip_heatmaps(heatmaps: Tensor, flip_indices: list[int]) -> Tensor:
    """Heatmaps of the mirrored image -> heatmaps of the original: mirror and swap left/right.

    With UDP the mirror of pixel x is exactly (w - 1) - x, so no shift is needed."""
    return heatmaps.flip(-1)[:, flip_indices]
