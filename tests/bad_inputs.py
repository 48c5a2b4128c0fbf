"""Bad and odd image files, built in memory, with the outcome each must have."""

from __future__ import annotations

import io

from PIL import Image

from curation.sample_crawl import _bomb_png


def _photo(size=(640, 480)) -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).resize(size)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bad_files() -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, expected decode reject reason or None when the image must be kept)."""
    photo = _photo()
    good_jpeg = _save(photo, "JPEG", quality=90)
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    sixteen = Image.fromarray(__import__("numpy").asarray(photo.convert("L"), dtype="uint16") * 257)
    frames = [photo.convert("P"), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "zero.jpg": (b"", "empty_file"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "truncated"),
        "text.jpg": (b"this is not an image, just text posing as one\n" * 4, "not_an_image"),
        "alpha.png": (_save(rgba, "PNG"), None),
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG"), None),
        "sixteen.png": (_save(sixteen, "PNG"), None),
        "animated.gif": (gif.getvalue(), "animated"),
        "photo.webp": (_save(photo, "WEBP"), None),
        "one.png": (_save(Image.new("RGB", (1, 1)), "PNG"), "too_small"),
        "bomb.png": (_bomb_png(), "decompression_bomb"),
        "rotated.jpg": (_save(photo, "JPEG", exif=exif), None),
        "grey.jpg": (_save(photo.convert("L"), "JPEG"), None),
    }
