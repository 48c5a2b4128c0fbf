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
from curation.models.weights import WeightFile
from curation.schema import REJECT
from curation.stages.base import ModelStage, Resources
from curation.stages.registry import register_stage


@dataclass
class EmbedConfig(StageConfig):
    model: str = clip_models.DEFAULT_MODEL  # any open_clip model name
    pretrained: str = clip_models.DEFAULT_PRETRAINED  # its open_clip pretrained tag
    weights: str | None = None  # explicit checkpoint path; "random" = random init (tests, benchmarks)
    device: str | None = None


@register_stage
class EmbedStage(ModelStage):
    name = "embed"
    kind = "map"
    requires = ("image", "width", "height")
    produces = ("clip",)
    rejects = ("error:embed",)
    # GPU: float16 autocast (models/clip.py); vectors are stored as float16 anyway.
    resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=32, gpu_batch_size=256, cost=0.11)
    Config = EmbedConfig
    description = "open_clip image embedding, L2-normalised, float16 fixed-size vector"

    def weight_files(self) -> list[WeightFile]:
        c = self.params
        return [clip_models.weight_file(self.name, "embed.weights", c.model, c.pretrained, c.weights)]

    @property
    def dim(self) -> int:
        return clip_models.embed_dim(self.params.model)

    def check_model(self) -> None:
        clip_models.check_model(self.params.model, self.params.pretrained, "embed")

    def load(self, found: dict[str, Any], threads: int) -> None:
        from curation.models.realism import cache_file

        c, path, seed = self.params, self.weight_path(found), self.config.run.seed
        # The text tower serves only `quality`'s prompts, when it shares this actor and they are not
        # cached yet (the driver's quality.check() caches them, so on one node they always are):
        # dropped otherwise, ~250 MB less per actor for ViT-B-32 (docs/benchmarks.md).
        text_tower = not cache_file(c.model, c.pretrained, path, seed).is_file()
        self.model = clip_models.ClipModel(c.model, c.pretrained, path, device=self.device(), seed=seed,
                                           text_tower=text_tower)

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
