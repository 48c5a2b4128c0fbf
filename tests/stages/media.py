"""Inputs for the model-stage tests: real photos that installed packages carry (ENV.md), encoded
as a crawl delivers them, and tables shaped as the runner feeds a map stage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from curation.imaging import probe


def load_photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    rgb = lambda p: np.asarray(Image.open(p).convert("RGB"))
    astronaut = skimage.data.astronaut()
    coffee = skimage.data.coffee()
    return {
        "astronaut": astronaut,
        "astronaut_flipped": np.ascontiguousarray(astronaut[:, ::-1]),
        "hopper": rgb(mpl / "grace_hopper.jpg"),
        "bus": rgb(assets / "bus.jpg"),
        "zidane": rgb(assets / "zidane.jpg"),
        "coffee": coffee,
        "chelsea": skimage.data.chelsea(),
        "coffee_sale": overlay(coffee, "SALE 50% OFF", (40, 40), 48),
    }


def overlay(image: np.ndarray, text: str, xy: tuple[int, int], size: int) -> np.ndarray:
    """A caption burned into the pixels, the way shops and meme sites do it."""
    im = Image.fromarray(image.copy())
    ImageDraw.Draw(im).text(xy, text, fill=(255, 255, 255), font=ImageFont.load_default(size=size),
                            stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_table(blobs: list[bytes], **extra: pa.Array) -> pa.Table:
    """Rows as the runner feeds a model stage: encoded bytes plus decode's oriented size."""
    widths, heights = [], []
    for b in blobs:
        try:
            p = probe(b)
            widths.append(p.width)
            heights.append(p.height)
        except Exception:  # noqa: BLE001 - a row that fails in the stage: what it does with it is under test
            widths.append(640)
            heights.append(480)
    cols = {"image": pa.array(blobs, pa.binary()), "width": pa.array(widths, pa.int32()),
            "height": pa.array(heights, pa.int32()), **extra}
    return pa.table(cols)
