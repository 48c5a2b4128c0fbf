"""`curate sample-crawl DIR`: a small, realistic crawl built offline from photos that installed
packages carry (ENV.md), with variants that give every filter work.

Kinds of item (the name prefix says which): large people (`person_`), people too small
(`small_person_`), text/watermark overlays (`text_`), near duplicates (`dup_`), no people
(`scene_`), odd encodings that must be handled (`format_`), and broken files (`broken_`).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont


def _package_photos() -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    import matplotlib
    import skimage.data
    import sklearn.datasets
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    people = {
        "bus": Image.open(assets / "bus.jpg").convert("RGB"),
        "zidane": Image.open(assets / "zidane.jpg").convert("RGB"),
        "hopper": Image.open(mpl / "grace_hopper.jpg").convert("RGB"),
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "camera": Image.fromarray(skimage.data.camera()).convert("RGB"),
    }
    china, flower = sklearn.datasets.load_sample_images().images
    scenes = {
        "coffee": Image.fromarray(skimage.data.coffee()),
        "chelsea": Image.fromarray(skimage.data.chelsea()),
        "rocket": Image.fromarray(skimage.data.rocket()),
        "china": Image.fromarray(china),
        "flower": Image.fromarray(flower),
    }
    return people, scenes


def _jpeg(im: Image.Image, q: int = 90, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=q, **kw)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _upscale(im: Image.Image, short: int) -> Image.Image:
    s = short / min(im.size)
    return im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)


def _variants(im: Image.Image, rng: random.Random, n: int) -> list[Image.Image]:
    """Distinct views of one photo: crops of different regions, flips, colour shifts."""
    out = []
    for i in range(n):
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.75, 0.95)), int(h * rng.uniform(0.75, 0.95))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        v = im.crop((x, y, x + cw, y + ch))
        if i % 2:
            v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        v = ImageEnhance.Color(v).enhance(rng.uniform(0.7, 1.3))
        out.append(v)
    return out


def _overlay_text(im: Image.Image, text: str, rng: random.Random, watermark: bool) -> Image.Image:
    im = im.copy().convert("RGBA")
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(24, im.width // 10)
    font = ImageFont.load_default(size=size)
    if watermark:
        for y in range(0, im.height, size * 3):
            draw.text((rng.randint(0, size), y), text, font=font, fill=(255, 255, 255, 110))
    else:
        y = rng.randint(0, max(1, im.height - size * 2))
        draw.rectangle((0, y, im.width, y + int(size * 1.4)), fill=(200, 0, 0, 255))
        draw.text((size // 2, y), text, font=font, fill=(255, 255, 255, 255))
    return Image.alpha_composite(im, layer).convert("RGB")


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims 900 MP; the pixel data is tiny. Decoding it would allocate ~900 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _odd_formats(base: Image.Image) -> dict[str, bytes]:
    im = _upscale(base, 640)
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(im.size))
    sixteen = Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    rotated = im.transpose(Image.Transpose.ROTATE_90)
    small = im.resize((320, 240))
    gif_frames = [small.convert("P"), small.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    gif = io.BytesIO()
    gif_frames[0].save(gif, format="GIF", save_all=True, append_images=gif_frames[1:], duration=100, loop=0)
    webp = io.BytesIO()
    im.save(webp, format="WEBP", quality=85)
    return {
        "format_alpha.png": _png(rgba),
        "format_cmyk.jpg": _jpeg(im.convert("CMYK")),
        "format_16bit.png": _png(sixteen),
        "format_grey.jpg": _jpeg(im.convert("L")),
        "format_exif_rotated.jpg": _jpeg(rotated, exif=exif),
        "format_photo.webp": webp.getvalue(),
        "broken_animated.gif": gif.getvalue(),
    }


def sample_items(seed: int = 0) -> dict[str, bytes]:
    """name -> file bytes, deterministic for a seed."""
    rng = random.Random(seed)
    people, scenes = _package_photos()
    items: dict[str, bytes] = {}
    for name, im in people.items():
        big = _upscale(im, 1024)
        items[f"person_{name}.jpg"] = _jpeg(big)
        for i, v in enumerate(_variants(big, rng, 6)):
            items[f"person_{name}_v{i}.jpg"] = _jpeg(v, q=rng.randint(80, 95))
        # near duplicates of the original: re-encoded, resized, slightly cropped
        items[f"dup_{name}_q60.jpg"] = _jpeg(big, q=60)
        items[f"dup_{name}_resized.jpg"] = _jpeg(big.resize((int(big.width * 0.8), int(big.height * 0.8))))
        cw, ch = int(big.width * 0.03), int(big.height * 0.03)
        items[f"dup_{name}_crop.jpg"] = _jpeg(big.crop((cw, ch, big.width - cw, big.height - ch)))
        for i, text in enumerate(["SALE 50% OFF", "(c) stockphoto.com"]):
            items[f"text_{name}_{i}.jpg"] = _jpeg(_overlay_text(big, text, rng, watermark=bool(i)))
    for name, scene in scenes.items():
        canvas = _upscale(scene, 1200)
        items[f"scene_{name}.jpg"] = _jpeg(canvas)
        for i, v in enumerate(_variants(canvas, rng, 3)):
            items[f"scene_{name}_v{i}.jpg"] = _jpeg(v)
        person = people[list(people)[len(items) % len(people)]]
        small = person.resize((person.width // 5, person.height // 5))
        pasted = canvas.copy()
        pasted.paste(small, (rng.randint(0, canvas.width - small.width), rng.randint(0, canvas.height - small.height)))
        items[f"small_person_{name}.jpg"] = _jpeg(pasted)
    items.update(_odd_formats(people["astronaut"]))
    good = items["person_bus.jpg"]
    items["broken_zero_bytes.jpg"] = b""
    items["broken_truncated.jpg"] = good[: len(good) // 2]
    items["broken_text_as.jpg"] = b"<html><body>404 Not Found</body></html>\n"
    items["broken_1x1.png"] = _png(Image.new("RGB", (1, 1), (255, 0, 0)))
    items["broken_bomb.png"] = _bomb_png()
    return items


def build_sample_crawl(out_dir: str, form: str = "folder", seed: int = 0,
                       base_url: str | None = None) -> dict[str, int]:
    items = sample_items(seed)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    broken = sum(1 for k in items if k.startswith("broken_"))
    if form == "folder":
        for name, data in items.items():
            (root / name).write_bytes(data)
    elif form == "urls":
        import pyarrow as pa
        import pyarrow.parquet as pq

        (root / "files").mkdir(exist_ok=True)
        for name, data in items.items():
            (root / "files" / name).write_bytes(data)
        base = (base_url or "http://127.0.0.1:8000/").rstrip("/")
        pq.write_table(pa.table({"url": [f"{base}/{n}" for n in items], "caption": list(items)}), root / "urls.parquet")
    elif form == "tars":
        import webdataset as wds

        names = list(items)
        for t, start in enumerate(range(0, len(names), 32)):
            with wds.TarWriter(str(root / f"crawl-{t:05d}.tar")) as sink:
                for name in names[start:start + 32]:
                    stem, ext = name.rsplit(".", 1)
                    sink.write({"__key__": stem, ext: items[name], "txt": stem})
    else:
        raise ValueError(f"unknown crawl format {form!r} (folder, urls, tars)")
    return {"images": len(items), "broken": broken}
