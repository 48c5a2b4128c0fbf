"""`embed`: one L2-normalised CLIP image embedding per image, stored as float16 [D].

The vector feeds `quality` (aesthetic head, zero-shot realism), `semdedup` and `cluster`, so CLIP
runs once per image in the whole DAG. The image is decoded at the DCT scale that still covers the
model's input size, then goes through the model's own transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import StageConfig
from curation.models import clip as clip_models
from curation.models.inputs import decode_rows
from curation.models.weights import RANDOM, WeightFile, resolve
from curation.schema import REJECT
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage


@dataclass
class EmbedConfig(StageConfig):
    model: str = clip_models.DEFAULT_MODEL  # any open_clip model name
    pretrained: str = clip_models.DEFAULT_PRETRAINED  # its open_clip pretrained tag
    weights: str | None = None  # explicit checkpoint path; "random" = random init (tests, benchmarks)
    device: str | None = None


@register_stage
class EmbedStage(Stage):
    name = "embed"
    kind = "map"
    order = 40
    requires = ("image", "width", "height")
    produces = ("clip",)
    rejects = ("error:embed",)
    # GPU: float16 autocast (models/clip.py); vectors are stored as float16 anyway.
    resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=32, gpu_batch_size=256, cost=0.11)
    stateful = True
    uses_gpu = True
    Config = EmbedConfig
    description = "open_clip image embedding, L2-normalised, float16 fixed-size vector"

    def weight_files(self) -> list[WeightFile]:
        c = self.cfg
        return [clip_models.weight_file(self.name, "embed.weights", c.model, c.pretrained, c.weights)]

    @property
    def random_weights(self) -> bool:
        return self.cfg.weights == RANDOM

    @property
    def dim(self) -> int:
        return clip_models.embed_dim(self.cfg.model)

    def check(self) -> None:
        from curation.models.device import check_device

        check_device(self.cfg.device, "embed.device")
        clip_models.check_model(self.cfg.model, self.cfg.pretrained, "embed")
        resolve(self.weight_files())

    def setup(self) -> None:
        from curation.models.device import set_threads, torch_device

        set_threads(getattr(self, "num_threads", None) or self.effective_resources().num_cpus)
        c = self.cfg
        w = self.weight_files()[0]
        path = None if w.random else resolve([w])[w.file].path
        self.model = clip_models.ClipModel(c.model, c.pretrained, path, device=torch_device(c.device),
                                           seed=self.config.run.seed)

    def process(self, table: pa.Table) -> dict[str, Any]:
        from PIL import Image

        n = table.num_rows
        arrays, _, errors = decode_rows(table, short_sides=[self.model.image_size] * n)
        ok = [i for i, a in enumerate(arrays) if a is not None]
        vectors = self.model.encode_images([Image.fromarray(arrays[i]) for i in ok])
        dense = np.zeros((n, self.model.dim), np.float16)
        dense[ok] = vectors.astype(np.float16)
        failed = np.array([e is not None for e in errors])
        # A fixed-size list keeps readers' [N, D] view; rows that failed to decode are null, not zeros.
        column = pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1)), self.model.dim,
                                                   mask=pa.array(failed) if failed.any() else None)
        return {"clip": column, REJECT: [None if e is None else "error:embed" for e in errors]}
