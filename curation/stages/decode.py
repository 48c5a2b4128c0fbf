"""`decode`: prove each image decodes, and record its oriented size, format and mode.

The header check (size, frames) runs before any pixel is decoded, so a decompression bomb is
rejected without allocating it. The validating decode runs at 1/8 DCT scale for JPEGs: libjpeg
still reads every entropy-coded byte (truncation and corruption are caught) but skips most of
the IDCT and colour work, which is where full decodes spend their time.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from curation.config import StageConfig
from curation.imaging import pil_open, probe
from curation.schema import REJECT
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage


@dataclass
class DecodeConfig(StageConfig):
    min_side: int = 64  # smaller images are rejected as too_small
    max_pixels: int = 178_956_970  # PIL's own bomb limit (2x its warning level); above: decompression_bomb
    allowed_formats: list[str] = field(
        default_factory=lambda: ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"])
    allow_animated: bool = False  # animated GIF/WebP/APNG: still images only by default


@register_stage
class DecodeStage(Stage):
    name = "decode"
    kind = "map"
    requires = ("image",)
    produces = ("width", "height", "format", "mode", "orientation")
    rejects = ("empty_file", "not_an_image", "truncated", "corrupt", "unsupported_format", "animated",
               "decompression_bomb", "too_small")
    resources = Resources(num_cpus=1.0, batch_size=64)
    Config = DecodeConfig
    description = "validate, EXIF-orient, record size/format/mode; reject corrupt, truncated, tiny, bombs"

    def process(self, table: pa.Table) -> dict[str, Any]:
        out: dict[str, list] = {c: [] for c in (*self.produces, REJECT)}
        for data in table.column("image").to_pylist():
            info, reason = self.validate(data)
            for key in self.produces:
                out[key].append(info.get(key))
            out[REJECT].append(reason)
        return out

    def validate(self, data: bytes | None) -> tuple[dict[str, Any], str | None]:
        c = self.params
        if not data:
            return {}, "empty_file"
        try:
            p = probe(data)
        except UnidentifiedImageError:
            return {}, "not_an_image"
        except Image.DecompressionBombError:
            return {}, "decompression_bomb"
        except Exception:  # noqa: BLE001 - a header PIL cannot parse is a corrupt file
            return {}, "corrupt"
        info = {"width": p.width, "height": p.height, "format": p.format, "mode": p.mode,
                "orientation": p.orientation}
        if p.format not in c.allowed_formats:
            return info, "unsupported_format"
        if p.n_frames > 1 and not c.allow_animated and p.format != "MPO":
            return info, "animated"
        if p.width * p.height > c.max_pixels:
            return info, "decompression_bomb"
        if min(p.width, p.height) < c.min_side:
            return info, "too_small"
        return info, _full_decode_reason(data)


def _full_decode_reason(data: bytes) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with pil_open(io.BytesIO(data)) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except OSError as exc:
        return "truncated" if "truncated" in str(exc).lower() else "corrupt"
    except Exception:  # noqa: BLE001 - any decoder failure is a recorded reject, never a crash
        return "corrupt"
    return None
