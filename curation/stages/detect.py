"""`detect`: person boxes with ultralytics YOLO, and the size of the largest person.

The recipe keeps images where at least one person's box has a short side >= 384 px in the
original image (`filters.min_person_short_side`, applied right after this stage by the runner).
YOLO letterboxes to `imgsz` on the long side, so the image is decoded at the JPEG DCT scale that
just covers it, and boxes are scaled back to original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import StageConfig
from curation.models.inputs import decode_rows
from curation.models.weights import WeightFile
from curation.models.yolo import DEFAULT_MODEL, YoloDetector, check_random_architecture, weight_file
from curation.schema import REJECT
from curation.stages.base import ModelStage, Resources
from curation.stages.registry import register_stage


@dataclass
class DetectConfig(StageConfig):
    model: str = DEFAULT_MODEL  # any YOLO detect checkpoint, by ultralytics name or path
    weights: str | None = None  # explicit checkpoint path; "random" = random init (tests, benchmarks)
    imgsz: int = 640  # YOLO input size (long side)
    conf: float = 0.25  # minimum box score kept
    iou: float = 0.7  # NMS IoU
    max_det: int = 100
    person_class: int | None = None  # None: the class named "person" (COCO: 0)
    device: str | None = None  # None: cuda when present, else cpu


@register_stage
class DetectStage(ModelStage):
    name = "detect"
    kind = "map"
    requires = ("image", "width", "height")
    produces = ("person_boxes", "num_persons", "max_person_short_side")
    rejects = ("error:detect",)
    # GPU: fp16 (ultralytics `quantize=16`), 64 images a batch (letterboxed to imgsz).
    resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=16, gpu_batch_size=64, cost=0.16)
    Config = DetectConfig
    description = "YOLO person boxes (x0,y0,x1,y1,score, original pixels) and the largest person's short side"

    def weight_files(self) -> list[WeightFile]:
        return [weight_file(self.name, self.params.model, self.params.weights)]

    def check_model(self) -> None:
        if self.random_weights:
            check_random_architecture(self.params.model, "detect.weights")

    def load(self, found: dict[str, Any], threads: int) -> None:
        c = self.params
        self.model = YoloDetector(self.weight_path(found), model=c.model, imgsz=c.imgsz, conf=c.conf, iou=c.iou,
                                  max_det=c.max_det, person_class=c.person_class, device=self.device(),
                                  seed=self.config.run.seed)

    def process(self, table: pa.Table) -> dict[str, Any]:
        arrays, factors, errors = decode_rows(table, long_side=self.params.imgsz)
        ok = [i for i, a in enumerate(arrays) if a is not None]
        dets = self.model([arrays[i] for i in ok])
        n = table.num_rows
        boxes: list[list | None] = [None] * n
        counts: list[int | None] = [None] * n
        largest: list[float | None] = [None] * n
        widths, heights = table.column("width").to_pylist(), table.column("height").to_pylist()
        for i, d in zip(ok, dets):
            b = d.copy()
            b[:, :4] *= factors[i]  # decoded pixels -> original pixels
            if widths[i] and heights[i]:
                b[:, [0, 2]] = b[:, [0, 2]].clip(0, widths[i])
                b[:, [1, 3]] = b[:, [1, 3]].clip(0, heights[i])
            short = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            boxes[i] = b.tolist()
            counts[i] = len(b)
            largest[i] = float(short.max()) if len(b) else 0.0
        return {"person_boxes": boxes, "num_persons": counts, "max_person_short_side": largest,
                REJECT: [None if e is None else "error:detect" for e in errors]}
