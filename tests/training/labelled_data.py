"""Synthetic labelled samples for the post-training heads: real photos, labels computed from them.

Every label is a function of the visible image *and differs from sample to sample*, so that a head
can only fit it by reading its input: a head that predicted the same output for every image (the
mean label, the most frequent class) is measurably worse, and the learning tests compute that
image-blind baseline and require the trained head to beat it.

  pose      the photo, squeezed to a per-sample width and height, sits at a per-sample height on
            a grey canvas; the 308 keypoints are a fixed mirror-symmetric template laid over the
            photo, so they move in the crop with the visible content (the box is the canvas)
  seg       red pixels are left / right upper arm by image half, dark ones background, the rest torso
  normal    normals of the height field "luminance x 16": tilts of tens of degrees that follow the image
  pointmap  depth 1 + 4 x luminance along the camera rays: a 1-5 unit range that follows the image
  albedo    the photo, blurred
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

NORMAL_HEIGHT = 16.0  # height-field scale: luminance gradients of ~0.03/px tilt normals by ~25 deg
DEPTH_NEAR, DEPTH_RANGE = 1.0, 4.0


def jpeg_bytes(image: Image.Image, size: int = 160) -> bytes:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _luminance(rgb: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    lum = rgb.astype(np.float64).mean(-1) / 255
    return gaussian_filter(lum, sigma=2)


def pose_template(rng: np.random.Generator) -> np.ndarray:
    """308 keypoints in box-normalised coordinates, mirror-symmetric: left/right pairs mirror each other."""
    from curation.training.heads import keypoints308 as kp

    xy = np.zeros((kp.NUM_KEYPOINTS, 2))
    for i, j in enumerate(kp.FLIP_INDICES):
        if i < j:
            xy[i] = rng.uniform([0.05, 0.05], [0.45, 0.95])
            xy[j] = [1 - xy[i, 0], xy[i, 1]]
        elif i == j:
            xy[i] = [0.5, rng.uniform(0.05, 0.95)]
    return xy


def _pose(photo: Image.Image, size: int, rng: np.random.Generator) -> dict:
    H = W = size
    # An even width centred on the canvas keeps the keypoints mirror-symmetric about its middle
    # (the flip tests rely on it); width, height and vertical position vary per sample.
    pw = 2 * int(rng.integers(W // 5, 2 * W // 5 + 1))
    ph = int(rng.integers(H // 2, 3 * H // 4 + 1))
    x0, y0 = (W - pw) // 2, int(rng.integers(0, H - ph + 1))
    canvas = np.full((H, W, 3), 114, np.uint8)
    canvas[y0 : y0 + ph, x0 : x0 + pw] = np.asarray(photo.convert("RGB").resize((pw, ph), Image.BICUBIC))
    # Pixel i of the pasted photo covers [x0 + i, x0 + i + 1): template 0..1 spans its extent.
    xy = pose_template(np.random.default_rng(7)) + rng.normal(0, 0.003, (308, 2))
    xy = np.array([x0, y0]) + xy * np.array([pw, ph])
    visible = np.where(rng.uniform(size=308) < 0.9, 2, 0)
    kpts = np.concatenate([xy, visible[:, None]], 1)
    return {
        "jpg": jpeg_bytes(Image.fromarray(canvas), size),
        "pose.json": json.dumps({"keypoints": kpts.tolist(), "box": [0.0, 0.0, float(W), float(H)]}),
    }


def labelled_sample(task: str, photo: Image.Image, size: int, rng: np.random.Generator) -> dict:
    """A sample whose label is a function of the image, so that a model can learn it."""
    if task == "pose":
        return _pose(photo, size, rng)
    image = photo.convert("RGB").resize((size, size), Image.BICUBIC)
    rgb = np.asarray(image)
    H, W = rgb.shape[:2]
    sample = {"jpg": jpeg_bytes(image, size)}
    lum = _luminance(rgb)
    if task == "seg":
        red = (rgb[..., 0] > rgb[..., 1]) & (rgb[..., 0] > rgb[..., 2])
        left = np.arange(W)[None, :] < W // 2
        labels = np.where(red, np.where(left, 11, 20), 22)  # left/right upper arm, torso
        labels = np.where(lum < 0.3, 0, labels).astype(np.uint8)
        labels[:4, :4] = 255  # an ignored corner
        sample["seg.png"] = _png(Image.fromarray(labels, mode="L"))
    elif task == "normal":
        gy, gx = np.gradient(lum * NORMAL_HEIGHT)
        normals = np.stack([-gx, -gy, np.ones_like(gx)], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        sample["normal.npy"] = _npy(normals.astype(np.float32))
    elif task == "pointmap":
        f = 1.2 * W
        z = DEPTH_NEAR + DEPTH_RANGE * lum
        u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        points = np.stack([(u - W / 2) * z / f, (v - H / 2) * z / f, z], -1)
        sample["pointmap.npy"] = _npy(points.astype(np.float32))
        sample["intrinsics.json"] = json.dumps({"fx": f, "fy": f, "cx": W / 2, "cy": H / 2})
    elif task == "albedo":
        from scipy.ndimage import gaussian_filter

        albedo = gaussian_filter(rgb.astype(np.float64), sigma=(1.5, 1.5, 0))
        sample["albedo.png"] = _png(Image.fromarray(albedo.clip(0, 255).astype(np.uint8)))
    if task in ("normal", "pointmap"):
        sample["mask.png"] = _png(Image.fromarray(((lum > 0.05) * 255).astype(np.uint8), mode="L"))
    return sample


def write_labelled_shards(
    root: Path, task: str, photos: list[Image.Image], samples: int, size: int = 64
) -> Path:
    """One shard of `samples` labelled samples + manifest; returns the manifest path."""
    import webdataset as wds

    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    path = shard_dir / "000000.tar"
    with wds.TarWriter(str(path)) as writer:
        for i in range(samples):
            writer.write(
                {"__key__": f"{task}_{i:04d}", **labelled_sample(task, photos[i % len(photos)], size, rng)}
            )
    blob = path.read_bytes()
    manifest = shard_dir / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "shards": [
                    {
                        "path": path.name,
                        "samples": samples,
                        "bytes": len(blob),
                        "sha256": hashlib.sha256(blob).hexdigest(),
                    }
                ],
                "counts": {"samples": samples},
                "config_hash": "test",
                "code_version": "test",
            }
        )
    )
    return manifest
