"""Trainer test fixtures: real photos, WebDataset shards with a manifest, a tiny config."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _cpu_settings():
    # The tiny models' ops are too small to gain from threads, and on a shared 2-core machine
    # a second thread only contends; denormal flushing is what the trainer does on CPU too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_num_threads(threads)


def _photo_paths() -> list[Path]:
    import matplotlib
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    return [
        assets / "bus.jpg",
        assets / "zidane.jpg",
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    ]


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Real photos of people shipped inside installed packages, as RGB PIL images."""
    from skimage import data

    images = [Image.open(p).convert("RGB") for p in _photo_paths()]
    images.append(Image.fromarray(data.astronaut()))
    return images


def jpeg_bytes(image: Image.Image, size: int = 160) -> bytes:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(root: Path, photos: list[Image.Image], num_shards: int, per_shard: int) -> Path:
    """`root/shards/000000.tar ...` + `manifest.json` in the shard stage's format; returns the manifest."""
    import webdataset as wds

    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for s in range(num_shards):
        path = shard_dir / f"{s:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                photo = photos[(s * per_shard + i) % len(photos)]
                # Vary the framing so that samples differ: a random crop of the photo.
                w, h = photo.size
                x0, y0 = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
                crop = photo.crop((x0, y0, x0 + 3 * w // 4, y0 + 3 * h // 4))
                writer.write(
                    {
                        "__key__": f"{s:06d}_{i:04d}",
                        "jpg": jpeg_bytes(crop),
                        "json": {"source": "test", "shard": s},
                    }
                )
        blob = path.read_bytes()
        entries.append(
            {
                "path": path.name,
                "samples": per_shard,
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
    manifest = shard_dir / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "shards": entries,
                "counts": {"samples": num_shards * per_shard},
                "config_hash": "test",
                "code_version": "test",
            }
        )
    )
    return manifest


@pytest.fixture(scope="session")
def shards(tmp_path_factory, photos) -> Path:
    """4 shards x 6 samples; returns the manifest path."""
    return write_shards(tmp_path_factory.mktemp("wds"), photos, num_shards=4, per_shard=6)


TINY = {
    "model": {"name": "sapiens2-tiny", "decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4},
    "cl": {"prototypes": 128, "head_hidden": 64, "head_bottleneck": 32, "teacher_temp_warmup_steps": 5},
    "data": {
        "batch_size": 4,
        "global_size": [64, 64],
        "local_size": [32, 32],
        "local_crops": 2,
        "shuffle_buffer": 8,
        "shuffle_initial": 4,
        "num_workers": 0,
    },
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "train": {"steps": 4, "log_every": 2, "ckpt_every": 2, "progress": "off", "tensorboard": False},
}


@pytest.fixture
def tiny_tree() -> dict:
    """The tiny config as a YAML-ready dict (a fresh copy)."""
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config(tmp_path):
    """A factory: the tiny pretraining config read from a YAML file, plus `--set`-style overrides."""
    import yaml

    from curation.training.config import load_pretrain_config

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))

    def make(data: str | os.PathLike = "", *overrides: str):
        return load_pretrain_config(path, overrides, data__data=str(data) if data else None)

    return make


# --- labelled shards for the post-training heads --------------------------------------------


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


def labelled_sample(task: str, photo: Image.Image, size: int, rng: np.random.Generator) -> dict:
    """A sample whose label is a function of the image, so that a model can learn it."""
    image = photo.convert("RGB").resize((size, size), Image.BICUBIC)
    rgb = np.asarray(image)
    H, W = rgb.shape[:2]
    sample = {"jpg": jpeg_bytes(image, size)}
    if task == "seg":
        lum = _luminance(rgb)
        red = (rgb[..., 0] > rgb[..., 1]) & (rgb[..., 0] > rgb[..., 2])
        left = np.arange(W)[None, :] < W // 2
        labels = np.where(red, np.where(left, 11, 20), 22)  # left/right upper arm, torso
        labels = np.where(lum < 0.3, 0, labels).astype(np.uint8)
        labels[:4, :4] = 255  # an ignored corner
        sample["seg.png"] = _png(Image.fromarray(labels, mode="L"))
    elif task in ("normal", "pointmap"):
        height = _luminance(rgb) * 8
        gy, gx = np.gradient(height)
        normals = np.stack([-gx, -gy, np.ones_like(gx)], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        if task == "normal":
            sample["normal.npy"] = _npy(normals.astype(np.float32))
        else:
            f = 1.2 * W
            z = 2.0 + height / 4
            u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
            points = np.stack([(u - W / 2) * z / f, (v - H / 2) * z / f, z], -1)
            sample["pointmap.npy"] = _npy(points.astype(np.float32))
            sample["intrinsics.json"] = json.dumps({"fx": f, "fy": f, "cx": W / 2, "cy": H / 2})
        sample["mask.png"] = _png(
            Image.fromarray(((_luminance(rgb) > 0.05) * 255).astype(np.uint8), mode="L")
        )
    elif task == "albedo":
        from scipy.ndimage import gaussian_filter

        albedo = gaussian_filter(rgb.astype(np.float64), sigma=(1.5, 1.5, 0))
        sample["albedo.png"] = _png(Image.fromarray(albedo.clip(0, 255).astype(np.uint8)))
    elif task == "pose":
        box = np.array([0.2 * W, 0.1 * H, 0.8 * W, 0.9 * H])
        xy = pose_template(np.random.default_rng(7)) + rng.normal(0, 0.01, (308, 2))
        xy = box[:2] + xy * (box[2:] - box[:2])
        visible = np.where(rng.uniform(size=308) < 0.9, 2, 0)
        kpts = np.concatenate([xy, visible[:, None]], 1)
        sample["pose.json"] = json.dumps({"keypoints": kpts.tolist(), "box": box.tolist()})
    return sample


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


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


HEAD_TINY = {
    "model": {
        "init": "random",
        "name": "sapiens2-tiny",
        "channels": [32, 32, 16, 16, 16],
        "pose_channels": 32,
    },
    "data": {
        "batch_size": 4,
        "input_size": [64, 64],
        "augment": False,
        "shuffle_buffer": 4,
        "shuffle_initial": 2,
        "num_workers": 0,
    },
    "optim": {"lr": 2e-3, "warmup_steps": 5, "layer_decay": 0.9},
    "train": {"steps": 10, "log_every": 5, "ckpt_every": 1000, "progress": "off", "tensorboard": False},
}


@pytest.fixture(scope="session")
def labelled(tmp_path_factory, photos):
    """A factory: `labelled(task)` -> manifest of 4 labelled samples of that task (made once per session)."""
    made: dict[str, Path] = {}

    def make(task: str) -> Path:
        if task not in made:
            made[task] = write_labelled_shards(tmp_path_factory.mktemp(f"labelled-{task}"), task, photos, 4)
        return made[task]

    return make


@pytest.fixture
def head_tree() -> dict:
    """The tiny head config as a YAML-ready dict (a fresh copy)."""
    import copy

    return copy.deepcopy(HEAD_TINY)


@pytest.fixture
def head_config():
    """A factory: `head_config(task, shards=..., data={...}, ...)` -> the tiny HeadTrainConfig."""
    import copy

    from curation.training.heads.config import HeadTrainConfig

    def make(task: str, shards: str | os.PathLike = "", **sections: dict) -> HeadTrainConfig:
        tree = copy.deepcopy(HEAD_TINY)
        tree["task"], tree["data"]["data"] = task, str(shards)
        for section, values in sections.items():
            tree.setdefault(section, {}).update(values)
        return HeadTrainConfig.from_dict(tree)

    return make


@pytest.fixture(scope="session")
def curate_app():
    """The `curate` typer app with its `train` group mounted, as `curate`'s entry point mounts it."""
    from curation import cli

    if not any(group.name == "train" for group in cli.app.registered_groups):
        cli._add_optional_apps()  # what cli.main() does before dispatching
    return cli.app
