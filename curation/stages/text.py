"""`text`: text and watermark overlays: the fraction of the image covered by text, and the boxes.

`text_area` is the area of the union of the text quadrilaterals over the image area (overlapping
boxes count once), measured at the detector's resolution. Thresholds (`filters.max_text_area`)
decide; this stage only measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import ConfigError, StageConfig
from curation.models.inputs import decode_rows
from curation.models.weights import WeightFile
from curation.schema import REJECT
from curation.stages.base import ModelStage, Resources
from curation.stages.registry import register_stage


@dataclass
class TextConfig(StageConfig):
    max_side: int = 960  # detector input: long side shrunk to this, never enlarged
    box_thresh: float = 0.5  # DB detector box score
    min_text_score: float = 0.5  # recognition confidence that makes a box text (RapidOCR's text_score)
    recognize: bool = True  # false: detector boxes only (faster, more false positives on texture)
    min_chars: int = 2  # a box must read as this many characters (one glyph is usually texture)
    # onnxruntime (the package's CPU build) | torch (the same graphs converted, CPU or CUDA) |
    # auto: torch on a GPU, onnxruntime on the CPU. See curation/models/ocr.py.
    backend: str = "auto"
    device: str | None = None  # None: the GPU when the stage was given one, else the CPU
    # Batches never change an answer (models/ocr.py), only how busy a GPU is kept.
    det_batch: int | None = None  # images of one input shape per detector pass; None: 1 on CPU, 16 on GPU
    rec_batch: int | None = None  # text lines of one padded width per recogniser pass; None: 6 / 64


@register_stage
class TextStage(ModelStage):
    name = "text"
    kind = "map"
    requires = ("image", "width", "height")
    produces = ("text_area", "text_boxes")
    rejects = ("error:text",)
    # On the CPU through onnxruntime; on a GPU through torch (same graphs, same answers: tests).
    resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=16, gpu_batch_size=32, cost=0.62)
    Config = TextConfig
    description = "PP-OCRv4 (rapidocr; onnxruntime on CPU, torch on GPU) text/watermark overlay: area and boxes"

    def weight_files(self) -> list[WeightFile]:
        from pathlib import Path

        from curation.models.ocr import model_files

        return [WeightFile(self.name, "text", f"rapidocr_onnxruntime/{Path(p).name}", "package", p)
                for p in model_files()]

    def check_model(self) -> None:
        from curation.models.ocr import BACKENDS

        if self.params.backend not in ("auto", *BACKENDS):
            raise ConfigError(f"text.backend: unknown {self.params.backend!r} (known: auto, {', '.join(BACKENDS)})")

    def load(self, found: dict[str, Any], threads: int) -> None:
        from curation.models.ocr import OverlayTextDetector

        c = self.params  # PP-OCRv4's graphs ship inside rapidocr-onnxruntime, which loads them itself
        device = self.device()
        backend = c.backend if c.backend != "auto" else ("torch" if device.startswith("cuda") else "onnxruntime")
        gpu = device.startswith("cuda")
        det_batch, rec_batch = c.det_batch or (16 if gpu else 1), c.rec_batch or (64 if gpu else 6)
        self.model = OverlayTextDetector(max_side=c.max_side, box_thresh=c.box_thresh,
                                         min_text_score=c.min_text_score, recognize=c.recognize,
                                         min_chars=c.min_chars, threads=threads, backend=backend, device=device,
                                         det_batch=det_batch, rec_batch=rec_batch)

    def process(self, table: pa.Table) -> dict[str, Any]:
        import cv2

        arrays, factors, errors = decode_rows(table, long_side=self.params.max_side)
        ok = [i for i, a in enumerate(arrays) if a is not None]
        found = self.model([arrays[i] for i in ok])
        n = table.num_rows
        area: list[float | None] = [None] * n
        boxes: list[list | None] = [None] * n
        for i, (quads, scores) in zip(ok, found):
            h, w = arrays[i].shape[:2]
            mask = np.zeros((h, w), np.uint8)
            if len(quads):
                cv2.fillPoly(mask, [np.round(q).astype(np.int32) for q in quads], 1)
            area[i] = float(mask.mean())
            f = factors[i]  # decoded pixels -> original pixels
            boxes[i] = [[float(q[:, 0].min() * f), float(q[:, 1].min() * f), float(q[:, 0].max() * f),
                         float(q[:, 1].max() * f), float(s)] for q, s in zip(quads, scores)]
        return {"text_area": area, "text_boxes": boxes,
                REJECT: [None if e is None else "error:text" for e in errors]}
