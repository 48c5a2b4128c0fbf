"""Trainer test fixtures: real photos, WebDataset shards with a manifest, a tiny config."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from labelled_data import jpeg_bytes, write_labelled_shards
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


# --- labelled shards for the post-training heads (samples made in labelled_data.py) -----------


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


@pytest.fixture(scope="session")
def two_rank_runs(tmp_path_factory, shards, photos):
    """The distributed runs of test_trainer_distributed.py and test_trainer_heads_distributed.py,
    made in one torchrun launch of 2 ranks (two_ranks.py), once per session."""
    from two_ranks import launch

    return launch(tmp_path_factory.mktemp("two-ranks"), shards, photos, TINY, HEAD_TINY)
