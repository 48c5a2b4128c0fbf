"""Inference: an image in, the task's output at the image's own resolution out; and model export.

predictor = Predictor.from_checkpoint("runs/seg/checkpoint-last.pt")
labels = predictor(Image.open("person.jpg"))            # [H, W] class ids
keypoints, scores = Predictor.from_checkpoint(pose_ckpt)(image, box=(x0, y0, x1, y1))
predictor.export("seg.pt")                               # TorchScript: backbone + head
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from curation.training.heads import udp
from curation.training.heads.evaluate import load_head_checkpoint
from curation.training.heads.labels import affine_matrix, to_input, warp_affine
from curation.training.heads.model import TaskModel
from curation.training.heads.tasks import TASKS


class ExportWrapper(nn.Module):
    """Plain-tensor outputs for tracing: the pointmap dict becomes (points, log_scale)."""

    def __init__(self, model: TaskModel):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        out = self.model(images)
        return (out["points"], out["log_scale"]) if isinstance(out, dict) else out


class Predictor:
    def __init__(self, model: TaskModel, cfg, device: str | torch.device = "cpu", flip_test: bool = False):
        self.model, self.cfg = model.to(device).eval(), cfg
        self.task = TASKS[cfg.task]
        self.device, self.flip_test = torch.device(device), flip_test
        self.input_size = tuple(cfg.data.input_size)  # H, W

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", flip_test: bool = False):
        model, cfg = load_head_checkpoint(path, device)
        return cls(model, cfg, device, flip_test)

    @torch.no_grad()
    def raw(self, images: Tensor):
        """Model output for normalised input images [B, 3, H, W], averaged with the un-flipped
        output of the mirrored images when flip_test is on."""
        out = self.model(images.to(self.device))
        if not self.flip_test:
            return out
        flipped = self.task.unflip(self.model(images.flip(-1).to(self.device)))
        if isinstance(out, dict):
            return {k: (out[k] + flipped[k]) / 2 for k in out}
        return (out + flipped) / 2

    def __call__(self, image: Image.Image | np.ndarray, box: tuple[float, float, float, float] | None = None):
        image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        H0, W0 = image.shape[:2]
        H, W = self.input_size
        if self.cfg.task == "pose":
            return self._pose(image, box or (0, 0, W0, H0))
        x = F.interpolate(to_input(image)[None], size=(H, W), mode="bilinear", antialias=True, align_corners=False)
        out = self.raw(x)

        def up(t: Tensor) -> Tensor:  # back to the image's resolution
            return F.interpolate(t.float(), size=(H0, W0), mode="bilinear", align_corners=False)

        if self.cfg.task == "seg":
            return up(out).argmax(dim=1)[0].to(torch.uint8).cpu().numpy()  # [H0, W0] class ids
        if self.cfg.task == "normal":
            return F.normalize(up(out), dim=1)[0].permute(1, 2, 0).cpu().numpy()  # [H0, W0, 3]
        if self.cfg.task == "albedo":
            return up(out).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()  # [H0, W0, 3]
        points = up(out["points"]) * out["log_scale"].exp()[:, None, None, None]  # metric
        return points[0].permute(1, 2, 0).cpu().numpy()  # [H0, W0, 3]

    def _pose(self, image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        H, W = self.input_size
        x0, y0, x1, y1 = (float(v) for v in box)
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        size = np.array([max(bw, bh * W / H), max(bh, bw * H / W)]) * self.cfg.data.box_padding
        M = affine_matrix(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), size, 0.0, (H, W))
        crop = warp_affine(image, M, (H, W))
        heatmaps = self.raw(to_input(crop)[None])
        keypoints, scores = udp.decode(heatmaps.float(), (H, W))
        xy = keypoints[0].cpu().numpy().astype(np.float64)
        inverse = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
        xy = xy @ inverse[:, :2].T + inverse[:, 2]  # crop -> image pixels
        return xy, scores[0].cpu().numpy()  # [K, 2], [K]

    def export(self, path: str | Path) -> Path:
        """TorchScript (traced) backbone + head at the training input size; `torch.jit.load(path)`."""
        H, W = self.input_size
        example = torch.randn(1, 3, H, W, device=self.device)
        with torch.no_grad():
            traced = torch.jit.trace(ExportWrapper(self.model).eval(), example, check_trace=False)
        path = Path(path)
        traced.save(str(path))
        return path
