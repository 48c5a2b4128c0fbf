"""Labelled samples and label-aware augmentation.

A labelled WebDataset sample holds the image (`jpg`) and the task's label:
  pose      `pose.json`  {"keypoints": [[x, y, v] x 308], "box": [x0, y0, x1, y1]}  (v > 0: labelled)
  seg       `seg.png`    uint8 class ids 0-28, 255 = ignore
  normal    `normal.npy` float32 [H, W, 3] unit normals, camera frame (x right, y down, z forward)
  pointmap  `pointmap.npy` float32 [H, W, 3] camera-frame XYZ + `intrinsics.json` {"fx","fy","cx","cy"}
  albedo    `albedo.png` RGB
plus, for the dense 3D/albedo tasks, an optional `mask.png` (non-zero = valid).

Every geometric transform is applied to the label the way it moves the pixels: crops and resizes
resample label maps (nearest for ids, normals and points; bilinear for albedo) and update the
intrinsics; a horizontal flip mirrors maps, swaps left/right classes and keypoints, negates the
normal's and the point's x, and mirrors the principal point.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from curation.config import ConfigError
from curation.training.data.augment import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop_box
from curation.training.data.loader import IMAGE_KEYS, decode_image
from curation.training.data.shards import Shard, iter_shard
from curation.training.heads import body_parts, keypoints308, udp
from curation.training.heads.config import output_size
from curation.training.heads.pose_head import HEATMAP_STRIDE

# The sample members each task reads (`mask.png` is optional).
LABEL_FILES = {
    "pose": ("pose.json",),
    "seg": ("seg.png",),
    "normal": ("normal.npy",),
    "pointmap": ("pointmap.npy", "intrinsics.json"),
    "albedo": ("albedo.png",),
}

# NEAREST_EXACT samples at pixel centres; plain NEAREST shifts label maps by up to a pixel.
NEAREST, BILINEAR = InterpolationMode.NEAREST_EXACT, InterpolationMode.BILINEAR


def _u(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def to_input(image: Image.Image | np.ndarray) -> Tensor:
    """RGB image -> normalised float tensor [3, H, W]."""
    x = TF.to_dtype(TF.pil_to_tensor(image) if isinstance(image, Image.Image) else torch.from_numpy(
        np.ascontiguousarray(image)).permute(2, 0, 1), torch.float32, scale=True)  # fmt: skip
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def _mask(raw: dict[str, Any], h: int, w: int) -> Tensor:
    if "mask.png" in raw:
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(raw["mask.png"])).convert("L")) > 0)[None].float()
    return torch.ones(1, h, w)


def dense_sample(task: str, raw: dict[str, Any], cfg, gen: torch.Generator, train: bool) -> dict[str, Tensor]:
    image = decode_image(raw)
    W0, H0 = image.size
    H, W = cfg.data.input_size
    out_size = list(output_size(cfg))  # label maps at the head's output resolution
    maps: dict[str, tuple[Tensor, InterpolationMode]] = {}
    if task == "seg":
        seg = torch.from_numpy(np.array(Image.open(io.BytesIO(raw["seg.png"])).convert("L"), dtype=np.int64))[None]
        maps["labels"] = (seg, NEAREST)
    else:
        maps["mask"] = (_mask(raw, H0, W0), NEAREST)
    if task == "normal":
        maps["normals"] = (
            torch.from_numpy(np.load(io.BytesIO(raw["normal.npy"]))).float().permute(2, 0, 1),
            NEAREST,
        )
    elif task == "albedo":
        albedo = TF.to_dtype(
            TF.pil_to_tensor(Image.open(io.BytesIO(raw["albedo.png"])).convert("RGB")),
            torch.float32,
            scale=True,
        )
        maps["albedo"] = (albedo, BILINEAR)
    elif task == "pointmap":
        maps["points"] = (
            torch.from_numpy(np.load(io.BytesIO(raw["pointmap.npy"]))).float().permute(2, 0, 1),
            NEAREST,
        )
        k = json.loads(raw["intrinsics.json"])
        fx, fy, cx, cy = (float(k[n]) for n in ("fx", "fy", "cx", "cy"))

    if train and cfg.data.augment:
        top, left, h, w = random_resized_crop_box(W0, H0, tuple(cfg.data.scale), W / H, gen)
        flip = _u(gen, 0, 1) < cfg.data.hflip_prob
    else:
        top, left, h, w, flip = 0, 0, H0, W0, False
    img = TF.resized_crop(TF.pil_to_tensor(image), top, left, h, w, [H, W], antialias=True)
    out = {"image": TF.normalize(TF.to_dtype(img, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)}
    for name, (value, mode) in maps.items():
        out[name] = TF.resized_crop(value, top, left, h, w, out_size, interpolation=mode, antialias=mode == BILINEAR)
    if flip:
        out = {name: v.flip(-1) for name, v in out.items()}
    if task == "seg":
        labels = out["labels"][0]
        if flip:
            swap = torch.tensor(body_parts.FLIP_CLASSES + [0] * (256 - body_parts.NUM_CLASSES))
            labels = torch.where(labels == body_parts.IGNORE_INDEX, labels, swap[labels.clamp(max=255)])
        out["labels"] = labels  # [H, W] int64
    elif task == "normal":
        if flip:
            out["normals"][0] *= -1
        out["mask"] = out["mask"] * (out["normals"].norm(dim=0, keepdim=True) > 0.5)
    elif task == "pointmap":
        sx, sy = W / w, H / h
        fx, fy, cx, cy = fx * sx, fy * sy, (cx - left) * sx, (cy - top) * sy
        if flip:
            out["points"][0] *= -1
            cx = W - cx
        focal = math.sqrt(fx * fy)
        # Canonical camera: the cloud scaled by f_canonical / f, so that apparent size pins down
        # shape, and the metric scale log(f / f_canonical) is a separate, global prediction.
        out["points"] = out["points"] * (cfg.loss.canonical_focal / focal)
        out["log_scale"] = torch.tensor(math.log(focal / cfg.loss.canonical_focal))
        out["intrinsics"] = torch.tensor([fx, fy, cx, cy])
        out["mask"] = out["mask"] * (out["points"][2:3] > 0)
    return out


def affine_matrix(center: np.ndarray, size: np.ndarray, rotation: float, out_size: tuple[int, int]) -> np.ndarray:
    """2x3 map from image pixels to an (H, W) crop showing `size` (w, h) pixels around `center`,
    rotated by `rotation` degrees. Scales in pixel intervals (W - 1) as UDP requires."""
    H, W = out_size
    a = math.radians(rotation)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    A = np.diag([(W - 1) / size[0], (H - 1) / size[1]]) @ R
    t = np.array([(W - 1) / 2, (H - 1) / 2]) - A @ center
    return np.concatenate([A, t[:, None]], axis=1)


def warp_affine(image: np.ndarray, M: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """`image` [H0, W0, 3] resampled (bilinear, black outside) so that pixel p lands at M @ [p, 1] in
    an (H, W) crop. M uses pixel-centre-at-integer coordinates; PIL puts centres at +0.5."""
    H, W = out_size
    A = np.vstack([M, [0, 0, 1]])
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    inverse = np.linalg.inv(shift @ A @ np.linalg.inv(shift))  # crop -> image, PIL coordinates
    warped = Image.fromarray(image).transform((W, H), Image.Transform.AFFINE, inverse[:2].flatten(), Image.BILINEAR)
    return np.array(warped)  # writable: torch.from_numpy warns on read-only arrays


def pose_sample(raw: dict[str, Any], cfg, gen: torch.Generator, train: bool) -> dict[str, Tensor]:
    image = np.asarray(decode_image(raw))
    ann = json.loads(raw["pose.json"])
    kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    x0, y0, x1, y1 = (float(v) for v in ann["box"])
    H, W = cfg.data.input_size
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    # The crop: the box padded and widened to the input's aspect ratio.
    cw, ch = max(bw, bh * W / H), max(bh, bw * H / W)
    size = np.array([cw, ch]) * cfg.data.box_padding
    rotation, flip = 0.0, False
    if train and cfg.data.augment:
        size = size * _u(gen, *cfg.data.box_scale)
        rotation = _u(gen, -cfg.data.rotation, cfg.data.rotation)
        flip = _u(gen, 0, 1) < cfg.data.hflip_prob
    M = affine_matrix(center, size, rotation, (H, W))
    crop = warp_affine(image, M, (H, W))
    xy = kpts[:, :2] @ M[:, :2].T + M[:, 2]  # [K, 2] in crop pixels
    visible = kpts[:, 2] > 0
    if flip:
        crop = crop[:, ::-1]
        xy[:, 0] = (W - 1) - xy[:, 0]  # mirror in pixel intervals (UDP)
        xy, visible = xy[keypoints308.FLIP_INDICES], visible[keypoints308.FLIP_INDICES]
    keypoints = torch.from_numpy(xy).float()
    vis = torch.from_numpy(visible)
    out_h, out_w = output_size(cfg)
    heatmap_size = (out_h // HEATMAP_STRIDE, out_w // HEATMAP_STRIDE)  # what PoseHead outputs
    heatmaps, weights = udp.encode(keypoints, vis, (H, W), heatmap_size, cfg.loss.heatmap_sigma)
    area = bw * bh * abs(np.linalg.det(M[:, :2]))  # the box's area in crop pixels, for OKS
    return {
        "image": to_input(crop),
        "heatmaps": heatmaps,  # [K, H_out/4, W_out/4]
        "target_weights": weights,  # [K]
        "keypoints": keypoints,  # [K, 2] crop pixels
        "visible": vis.float(),  # [K]
        "area": torch.tensor(area, dtype=torch.float32),
        "affine": torch.from_numpy(M).float(),  # image -> crop, to map predictions back
    }


class TaskDecoder:
    """`decode(raw, generator)` for SampleStream: one labelled, augmented sample of `cfg.task`."""

    def __init__(self, cfg, train: bool):
        self.cfg, self.train = cfg, train

    def __call__(self, raw: dict[str, Any], gen: torch.Generator) -> dict[str, Tensor]:
        if self.cfg.task == "pose":
            return pose_sample(raw, self.cfg, gen, self.train)
        return dense_sample(self.cfg.task, raw, self.cfg, gen, self.train)


def require_labels(shards: list[Shard], task: str) -> None:
    """Refuse, before any model is built, shards whose first sample lacks the task's label: every
    sample would be skipped and the stream would never yield a batch."""
    url = shards[0].url
    sample = next(iter_shard(url), None)
    if sample is None:
        raise ConfigError(f"{url}: the shard holds no samples")
    key = sample.get("__key__")
    missing = [name for name in LABEL_FILES[task] if name not in sample]
    if not any(k in sample for k in IMAGE_KEYS):
        missing.insert(0, "jpg")
    if missing:
        raise ConfigError(
            f"{url}: sample {key} has no {', '.join(f'{key}.{m}' for m in missing)}, which task {task} needs; "
            "make labelled shards with `curate train labels`"
        )
