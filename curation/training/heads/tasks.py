"""The five post-training tasks: for each, its head, its loss, its metric and its test-time flip.

A task binds the pieces the trainer, the evaluator and the predictor share, so that adding a task
is one class here plus its label decoding in labels.py.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from curation.training.heads import body_parts, keypoints308, udp
from curation.training.heads.dense_head import AlbedoHead, NormalHead, PixelShuffleDecoder, PointmapHead
from curation.training.heads.losses import albedo_loss, normal_loss, pointmap_loss, pose_loss, seg_loss
from curation.training.heads.metrics import AlbedoMetric, NormalMetric, OKSMetric, PointmapMetric, SegMetric
from curation.training.heads.pose_head import PoseHead


class Task(abc.ABC):
    name: str
    primary: str  # the metric that says "better", and whether higher is better
    higher_is_better: bool = True

    @abc.abstractmethod
    def head(self, dim: int, cfg, upsample: int = 16) -> nn.Module:
        """The head for a backbone of width `dim` whose feature map is `upsample` times coarser than
        the task's output maps (16 for the plain backbone at full resolution; 32 for the 4K
        variant, one token per 64 input pixels, decoding at half the input resolution)."""

    @abc.abstractmethod
    def loss(self, out, batch: dict, cfg) -> dict[str, Tensor]: ...

    @abc.abstractmethod
    def metric(self): ...

    @abc.abstractmethod
    def update(self, metric, out, batch: dict, cfg) -> None: ...

    @abc.abstractmethod
    def unflip(self, out):
        """The prediction for a mirrored input, mapped back onto the original image."""


class Pose(Task):
    name, primary = "pose", "AP"

    def head(self, dim, cfg, upsample=16):
        return PoseHead(dim, keypoints308.NUM_KEYPOINTS, cfg.model.pose_channels, upsample)

    def loss(self, out, batch, cfg):
        return pose_loss(out, batch["heatmaps"], batch["target_weights"], cfg.loss.ohkm_topk, cfg.loss.ohkm_weight)

    def metric(self):
        return OKSMetric(keypoints308.SIGMAS, keypoints308.GROUPS)

    def update(self, metric, out, batch, cfg):
        keypoints, scores = udp.decode(out.float(), tuple(cfg.data.input_size))
        metric.update(keypoints, scores, batch["keypoints"], batch["visible"], batch["area"])

    def unflip(self, out):
        return udp.flip_heatmaps(out, keypoints308.FLIP_INDICES)


class Seg(Task):
    name, primary = "seg", "mIoU"

    def head(self, dim, cfg, upsample=16):
        return PixelShuffleDecoder(dim, body_parts.NUM_CLASSES, cfg.model.channels, upsample)

    def loss(self, out, batch, cfg):
        weights = cfg.loss.class_weights
        weights = torch.tensor(weights, device=out.device) if weights is not None else None
        return seg_loss(out, batch["labels"], weights, cfg.loss.dice_weight)

    def metric(self):
        return SegMetric(body_parts.NUM_CLASSES, body_parts.CLASSES)

    def update(self, metric, out, batch, cfg):
        metric.update(out.argmax(dim=1), batch["labels"])

    def unflip(self, out):
        return out.flip(-1)[:, body_parts.FLIP_CLASSES]


class Normal(Task):
    name, primary, higher_is_better = "normal", "mean_angular_error", False

    def head(self, dim, cfg, upsample=16):
        return NormalHead(dim, cfg.model.channels, upsample)

    def loss(self, out, batch, cfg):
        return normal_loss(out, batch["normals"], batch["mask"], cfg.loss.l1_weight, cfg.loss.grad_weight)

    def metric(self):
        return NormalMetric()

    def update(self, metric, out, batch, cfg):
        metric.update(out, batch["normals"], batch["mask"])

    def unflip(self, out):
        out = out.flip(-1).clone()
        out[:, 0] *= -1
        return out


class Pointmap(Task):
    name, primary, higher_is_better = "pointmap", "L2", False

    def head(self, dim, cfg, upsample=16):
        return PointmapHead(dim, cfg.model.channels, upsample)

    def loss(self, out, batch, cfg):
        return pointmap_loss(out, batch["points"], batch["log_scale"], batch["mask"], cfg.loss.scale_weight)

    def metric(self):
        return PointmapMetric()

    def update(self, metric, out, batch, cfg):
        metric.update(out["points"], out["log_scale"], batch["points"], batch["log_scale"], batch["mask"])

    def unflip(self, out):
        points = out["points"].flip(-1).clone()
        points[:, 0] *= -1
        return {"points": points, "log_scale": out["log_scale"]}


class Albedo(Task):
    name, primary = "albedo", "PSNR"

    def head(self, dim, cfg, upsample=16):
        return AlbedoHead(dim, cfg.model.channels, upsample)

    def loss(self, out, batch, cfg):
        return albedo_loss(out, batch["albedo"], batch["mask"], cfg.loss.grad_weight, cfg.loss.chroma_weight)

    def metric(self):
        return AlbedoMetric()

    def update(self, metric, out, batch, cfg):
        metric.update(out, batch["albedo"], batch["mask"])

    def unflip(self, out):
        return out.flip(-1)


TASKS: dict[str, Task] = {t.name: t for t in (Pose(), Seg(), Normal(), Pointmap(), Albedo())}
