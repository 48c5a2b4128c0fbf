"""`headpose`: yaw, pitch and roll of the most salient person's head, and whether one was found.

The most salient person is the largest box from `detect` (the subject of the photo, not a face in
the crowd). Only that box is searched for a face, decoded at the JPEG DCT scale that gives the
box about `crop_side` pixels on its short side: faces inside stay well above MTCNN's minimum size
while a 4000 px photo is never decoded in full. Without boxes (early filter off) the whole image
is searched at `whole_side`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.config import ConfigError, StageConfig
from curation.models.inputs import decode_rows, sizes
from curation.models.weights import WeightFile
from curation.schema import REJECT
from curation.stages.base import ModelStage, Resources
from curation.stages.registry import register_stage


@dataclass
class HeadposeConfig(StageConfig):
    backend: str = "mtcnn"  # see curation/models/headpose.py BACKENDS
    # px in the decoded crop. 40 rather than MTCNN's 20: a salient person's face is >= 15% of a
    # 256 px box, and skipping the finest pyramid level halves MTCNN's time (101 -> 56 ms/img).
    min_face_size: int = 40
    min_face_score: float = 0.9  # faces below this confidence are not faces
    crop_side: int = 256  # short side of the person's box after decoding
    whole_side: int = 512  # short side of the whole image when there are no person boxes
    box_margin: float = 0.1  # box grown by this fraction per side: heads stick out of tight boxes
    device: str | None = None


@register_stage
class HeadposeStage(ModelStage):
    name = "headpose"
    kind = "map"
    requires = ("image", "width", "height", "person_boxes")
    produces = ("head_yaw", "head_pitch", "head_roll", "head_found")
    rejects = ("error:headpose",)
    # GPU: float32. MTCNN runs one person crop at a time (crops differ in size): small kernels
    # bound by launches, not arithmetic, so half precision buys little and would move the landmarks
    # PnP reads. The GPU batch only amortises the per-batch overhead.
    resources = Resources(num_cpus=1.0, num_gpus=0.1, batch_size=16, gpu_batch_size=32, cost=0.13)
    Config = HeadposeConfig
    description = "yaw/pitch/roll (degrees) of the largest person's face: MTCNN landmarks + PnP"

    def weight_files(self) -> list[WeightFile]:
        if self.params.backend != "mtcnn":
            return []
        import facenet_pytorch

        data = Path(facenet_pytorch.__file__).parent / "data"
        return [WeightFile(self.name, "headpose.backend", f"facenet_pytorch/{n}", "package", str(data / n))
                for n in ("pnet.pt", "rnet.pt", "onet.pt")]

    def check_model(self) -> None:
        from curation.models.headpose import BACKENDS

        if self.params.backend not in BACKENDS:
            raise ConfigError(f"headpose.backend: unknown {self.params.backend!r} (known: {', '.join(BACKENDS)})")

    def load(self, found: dict[str, Any], threads: int) -> None:
        from curation.models.headpose import BACKENDS

        c = self.params  # MTCNN's weights ship inside facenet-pytorch, which loads them itself
        self.model = BACKENDS[c.backend](device=self.device(), min_face_size=c.min_face_size,
                                         min_score=c.min_face_score)

    def _salient(self, boxes: list | None) -> list[float] | None:
        if not boxes:
            return None
        return max(boxes, key=lambda b: ((b[2] - b[0]) * (b[3] - b[1]), b[4]))

    def process(self, table: pa.Table) -> dict[str, Any]:
        c = self.params
        widths, heights = sizes(table)
        salient = [self._salient(b) for b in table.column("person_boxes").to_pylist()]
        short_sides = []
        for w, h, box in zip(widths, heights, salient):
            if not w or not h:
                short_sides.append(None)
            elif box is None:
                short_sides.append(min(min(w, h), c.whole_side))
            else:
                reduction = max(1.0, min(box[2] - box[0], box[3] - box[1]) / c.crop_side)
                short_sides.append(max(1, math.ceil(min(w, h) / reduction)))
        arrays, factors, errors = decode_rows(table, short_sides=short_sides)
        ok = [i for i, a in enumerate(arrays) if a is not None]
        regions = [self._region(salient[i], factors[i], arrays[i].shape) for i in ok]
        poses = self.model([arrays[i] for i in ok], regions)
        n = table.num_rows
        out: dict[str, list] = {k: [None] * n for k in self.produces}
        for i, pose in zip(ok, poses):
            out["head_found"][i] = pose is not None
            if pose is not None:
                out["head_yaw"][i], out["head_pitch"][i], out["head_roll"][i] = pose.yaw, pose.pitch, pose.roll
        out[REJECT] = [None if e is None else "error:headpose" for e in errors]
        return out

    def _region(self, box: list[float] | None, factor: float, shape: tuple) -> tuple[int, int, int, int] | None:
        """The person's box in decoded pixels, grown by `box_margin`, clipped to the image."""
        if box is None:
            return None
        x0, y0, x1, y1 = (v / factor for v in box[:4])
        mx, my = (x1 - x0) * self.params.box_margin, (y1 - y0) * self.params.box_margin
        h, w = shape[:2]
        return (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(w, math.ceil(x1 + mx)),
                min(h, math.ceil(y1 + my)))
