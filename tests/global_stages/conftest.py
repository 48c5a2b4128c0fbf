"""Fixtures for the global-stage tests: a small local Ray, real photos from installed packages
with transformed copies, and a stand-in for the runner's GlobalContext."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@dataclass
class Ctx:
    """The GlobalContext attributes the global stages rely on (curation/runner/global_job.py owns the
    real one): config, cache_uri, input_fingerprint, seed, num_cpus."""

    config: object
    cache_uri: str
    input_fingerprint: str = "fp-0"
    seed: int = 0
    num_cpus: int = 2
    extra: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def ray_local():
    """Ray on 2 CPUs. Every global stage uses tasks (no actor pools), so reads always get a CPU
    and the 2-core deadlock of ENV.md cannot happen."""
    import ray

    started = not ray.is_initialized()
    if started:
        # no runtime_env: workers inherit os.environ, and a runtime_env slows every worker start
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    if started:
        ray.shutdown()


def jpeg(im: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _to_pil(arr: np.ndarray) -> Image.Image:
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255 if arr.max() <= 1 else arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def base_images() -> dict[str, Image.Image]:
    """Distinct real images (no two of them near-duplicates of each other)."""
    import matplotlib
    import skimage.data as sk
    import sklearn.datasets
    import ultralytics

    ims = {name: _to_pil(getattr(sk, name)()) for name in (
        "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page",
        "immunohistochemistry", "text", "brick", "grass", "gravel", "colorwheel", "clock")}
    ims["motorcycle_left"] = _to_pil(sk.stereo_motorcycle()[0])
    ims["shepp_logan"] = _to_pil(sk.shepp_logan_phantom())
    sk_images = Path(sklearn.datasets.__file__).parent / "images"
    ims["china"] = Image.open(sk_images / "china.jpg").convert("RGB")
    ims["flower"] = Image.open(sk_images / "flower.jpg").convert("RGB")
    assets = Path(ultralytics.__file__).parent / "assets"
    ims["bus"] = Image.open(assets / "bus.jpg").convert("RGB")
    ims["zidane"] = Image.open(assets / "zidane.jpg").convert("RGB")
    sample_data = Path(matplotlib.get_data_path()) / "sample_data"
    ims["grace_hopper"] = Image.open(sample_data / "grace_hopper.jpg").convert("RGB")
    # more distinct photos: non-overlapping quadrants of images not used whole above
    for src in ("hubble_deep_field", "retina"):
        im = _to_pil(getattr(sk, src)())
        w, h = im.size
        for qi, (x, y) in enumerate([(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)]):
            ims[f"{src}_q{qi}"] = im.crop((x, y, x + w // 2, y + h // 2))
    return ims


def transforms(im: Image.Image, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """The copies of the issue: JPEG q50-95, resize 0.5x-2x, crop <= 5%, brightness +-10%."""
    w, h = im.size
    out = [(f"jpeg_q{q}", jpeg(im, q)) for q in (50, 70, 95)]
    for s in (0.5, 0.75, 1.5, 2.0):
        out.append((f"resize_{s}", jpeg(im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.LANCZOS))))
    for frac in (0.02, 0.05):
        dx, dy = int(w * frac * rng.random()), int(h * frac * rng.random())
        out.append((f"crop_{frac}", jpeg(im.crop((dx, dy, w - (int(w * frac) - dx), h - (int(h * frac) - dy))))))
    for factor in (0.9, 1.1):
        out.append((f"brightness_{factor}", jpeg(ImageEnhance.Brightness(im).enhance(factor))))
    return out


@pytest.fixture(scope="session")
def near_dup_set():
    return build_near_dup_rows()


def build_near_dup_rows() -> list[dict]:
    """Rows: originals, their transformed copies, and 4 byte-identical copies of originals.
    Each row: id, input_shard, image, content_hash, width, height, aesthetic, source, kind."""
    rng = np.random.default_rng(0)
    rows = []

    def add(source: str, kind: str, data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        i = len(rows)
        rows.append({"id": f"shard{i % 3}-{i:05d}", "input_shard": f"shard{i % 3}", "image": data,
                     "content_hash": hashlib.sha1(data).hexdigest(), "width": w, "height": h,
                     "aesthetic": float(rng.uniform(3, 7)), "source": source, "kind": kind})

    for name, im in base_images().items():
        add(name, "original", jpeg(im, 92))
        for kind, data in transforms(im, rng):
            add(name, kind, data)
    for r in [r for r in rows if r["kind"] == "original"][:4]:
        add(r["source"], "exact_copy", r["image"])
        rows[-1]["aesthetic"] = r["aesthetic"]  # same bytes, same score
    return rows
