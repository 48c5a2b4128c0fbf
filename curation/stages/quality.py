"""`quality`: aesthetic score and realism, both from the stored `clip` vectors of `embed`.

No image is decoded and the CLIP image tower is never built here: the aesthetic score is a LAION
head on the embedding, and realism is a zero-shot softmax of the embedding against prompt
ensembles that the CLIP text tower embeds once and a disk cache keeps (curation/models/realism.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import ConfigError, StageConfig
from curation.models import aesthetic
from curation.models import clip as clip_models
from curation.models.weights import RANDOM, WeightFile, resolve
from curation.schema import REJECT
from curation.stages.base import ModelStage, Resources
from curation.stages.registry import register_stage

log = logging.getLogger(__name__)


@dataclass
class QualityConfig(StageConfig):
    head: str = "auto"  # laion-linear-b32 | laion-linear-l14 | improved-mlp-l14 | auto (by embed.model)
    weights: str | None = None  # explicit head file; "random" = random head (tests, benchmarks)


@register_stage
class QualityStage(ModelStage):
    name = "quality"
    kind = "map"
    requires = ("clip",)
    produces = ("aesthetic", "realism")
    rejects = ("error:quality",)
    # Two tiny matrix products per row: a CPU stage even on GPU nodes.
    resources = Resources(num_cpus=0.5, num_gpus=0.0, batch_size=256, cost=0.001)
    uses_gpu = False
    Config = QualityConfig
    description = "LAION aesthetic head and CLIP zero-shot realism, from embed's stored vectors"

    def config_sections(self) -> tuple[str, ...]:
        return (self.name, "embed")  # the text tower and the vectors' space come from embed's model

    @property
    def embed_cfg(self) -> Any:
        return self.config.stages["embed"]

    def head_spec(self) -> aesthetic.HeadSpec:
        name = self.params.head
        if name == "auto":
            name = aesthetic.AUTO.get(self.embed_cfg.model)
            if name is None:
                raise ConfigError(f"quality.head=auto: no LAION aesthetic head for CLIP {self.embed_cfg.model!r}; "
                                  f"heads exist for ViT-B-32 and ViT-L-14 (embed.model), or set quality.head")
        if name not in aesthetic.HEADS:
            raise ConfigError(f"quality.head: unknown {name!r} (known: auto, {', '.join(aesthetic.HEADS)})")
        return aesthetic.HEADS[name]

    def weight_files(self) -> list[WeightFile]:
        e = self.embed_cfg
        # The CLIP file is embed's (same key, same file): the text tower must match the vectors.
        return [clip_models.weight_file(self.name, "embed.weights", e.model, e.pretrained, e.weights),
                aesthetic.weight_file(self.name, self.head_spec(), self.params.weights)]

    def check_model(self) -> None:
        spec, e = self.head_spec(), self.embed_cfg
        dim = clip_models.embed_dim(e.model)
        if spec.dim != dim:
            raise ConfigError(f"quality.head {spec.name} reads {spec.dim}-d CLIP embeddings but embed.model "
                              f"{e.model} gives {dim}-d; pick a head of that width or change embed.model")
        if (e.model.removesuffix("-quickgelu"), e.pretrained) != spec.trained_on and e.weights != RANDOM:
            log.warning("quality.head %s was fit on %s/%s embeddings, embed runs %s/%s: aesthetic scores "
                        "rank images but are not calibrated to LAION's 1-10 scale", spec.name,
                        *spec.trained_on, e.model, e.pretrained)
        clip_models.check_model(e.model, e.pretrained, "embed")

    def check(self) -> None:
        super().check()
        found = resolve(self.weight_files())
        # The run's start-up check runs on the driver before any actor starts: computing the
        # realism class embeddings here puts them in the node's disk cache once per run (never,
        # once cached), and the actors load a [C, D] array instead of each building a text tower.
        self._class_embeddings(found)

    def _class_embeddings(self, found: dict) -> tuple[np.ndarray, float]:
        from curation.models.realism import class_embeddings

        e = self.embed_cfg
        return class_embeddings(e.model, e.pretrained, self.weight_path(found), self.config.run.seed)

    def load(self, found: dict[str, Any], threads: int) -> None:
        from curation.models.realism import RealismScorer

        # Realism needs CLIP's text tower only for the prompts' class embeddings: those come from
        # the disk cache (the driver's check() or an earlier actor filled it), else from embed's
        # model when it runs in this actor, else from a text tower built once here.
        self.realism = RealismScorer(*self._class_embeddings(found))
        self.head = aesthetic.AestheticHead(self.head_spec(), self.weight_path(found, 1), seed=self.config.run.seed)

    def process(self, table: pa.Table) -> dict[str, Any]:
        col = table.column("clip").combine_chunks()
        n = len(col)
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        dim = self.head.spec.dim
        emb = np.zeros((n, dim), np.float32)
        if valid.any():
            # flatten() skips null rows for list and fixed-size list columns alike.
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            if flat.size != int(valid.sum()) * dim:
                raise ValueError(f"clip vectors are {flat.size // max(1, int(valid.sum()))}-d, "
                                 f"quality.head {self.head.spec.name} expects {dim}-d")
            emb[valid] = flat.reshape(-1, dim)
        # float16 storage moves the norm off 1 by ~1e-3: renormalise, the heads expect unit vectors.
        emb[valid] /= np.linalg.norm(emb[valid], axis=1, keepdims=True).clip(1e-6)
        aes, real = self.head(emb), self.realism(emb)
        aes_out = [float(a) if v else None for a, v in zip(aes, valid)]
        real_out = [float(r) if v else None for r, v in zip(real, valid)]
        return {"aesthetic": aes_out, "realism": real_out,
                REJECT: [None if v else "error:quality" for v in valid]}
