"""Typed pretraining config: defaults < YAML file < `--set a.b=c` overrides.

The resolved config is written to `OUT/config.yaml` and stored inside every checkpoint, so a run
can be reproduced from either. Validation (unknown keys with a suggestion, type checks) is the
project's one implementation in `curation.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.config import ConfigError, build_dataclass
from curation.training.config_tree import load_tree


@dataclass
class ModelConfig:
    name: str = "sapiens2-0.4b"  # a named size from curation.training.backbone.SIZES
    window_layers: int | None = None  # 4K variant: layers inside 4x4-token windows; None = the size's default
    layer_scale_init: float = 1e-4  # released Sapiens2 `layer_scale_init_value`
    # Architecture variants (backbone.ARCH_OPTIONS); the defaults are the released model.
    rope_pairing: str = "halves"  # released: rotate-half; "pairs" = adjacent channel pairs (ours)
    rope_dtype: str = "bf16"  # released `pos_embed_rope_dtype`; "fp32" = ours (fused CPU kernels)
    layer_scale_ffn: bool = False  # released: LayerScale on attention only; True = both branches (ours)
    tokenizer: str = "released"  # 4K tokenizer: "released" (local pos-embed) or "rope" (ours)
    init: str = ""  # backbone weights to start from: `curate train import` output or a checkpoint
    # MAE decoder, light as in MAE (its paper: 512 wide, 8 deep; 4 here). None = the size's
    # default (SIZE_DEFAULTS): the tiny test model gets a decoder and a head its own size.
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    grad_checkpointing: bool = False  # recompute block activations in backward (large sizes)


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75  # MAE paper's default, kept by Sapiens (v1) and Sapiens2
    norm_pix: bool = True  # per-patch normalised pixel targets (MAE paper)
    # Reconstruction resolution as a fraction of the input; None = 0.5 for the 4K variants (the
    # paper's abstract: "pretrained at 2K output resolution", reached in `final_phase`), 1.0 otherwise.
    output_scale: float | None = None


@dataclass
class FinalPhaseConfig:
    """The 4K variants' short 2K-output phase: the last `steps` optimiser steps take global crops of
    `global_size` (4096x3072, reconstructed at mae.output_scale 0.5: 2048x1536) in batches of
    `batch_size` (None = data.batch_size); the steps before take data.global_size."""

    # None = round(1.6% of train.steps) for -4k sizes, 0 otherwise. Source: the Sapiens2 paper's
    # step count was not available; this is dinov2's high-resolution adaptation (the last 10k of
    # 625k iterations at 518 px).
    steps: int | None = None
    global_size: list[int] = field(default_factory=lambda: [4096, 3072])  # H, W
    batch_size: int | None = None


@dataclass
class CLConfig:
    weight: float = 1.0  # lambda in L = L_MAE + lambda * L_CL (ours: equal weights)
    # Prototype head: dinov2 defaults (65536 prototypes, 2048 hidden, 256 bottleneck, 3 layers);
    # None = the size's default (SIZE_DEFAULTS).
    prototypes: int | None = None
    head_hidden: int | None = None
    head_bottleneck: int | None = None
    head_layers: int = 3
    normalization: str = "centering"  # or "sinkhorn" (dinov2 `train.centering` default: centering)
    center_momentum: float = 0.9  # DINO / dinov2
    sinkhorn_iters: int = 3  # dinov2
    student_temp: float = 0.1  # dinov2
    teacher_temp: float = 0.07  # dinov2 `teacher.teacher_temp`
    teacher_temp_warmup_start: float = 0.04  # dinov2 `warmup_teacher_temp`
    teacher_temp_warmup_steps: int = 10000  # ours (dinov2: 30 epochs of 1250 iterations)
    # Teacher EMA momentum: starts at dinov3's 0.994 (its ViT-7B pretrain config, constant there),
    # cosine to 1.0 over the run as in dinov2 (`final_momentum_teacher`).
    momentum_start: float = 0.994
    momentum_end: float = 1.0
    koleo_weight: float = 0.1  # KoLeo spread of the student's global [CLS] (dinov2 `koleo_loss_weight`); 0 = off


@dataclass
class DataConfig:
    data: str = ""  # manifest.json, or a shard pattern (local, s3://, pipe:)
    batch_size: int = 32  # per rank and micro-step
    global_size: list[int] = field(default_factory=lambda: [1024, 768])  # H, W
    local_size: list[int] = field(default_factory=lambda: [256, 192])
    local_crops: int = 4
    # Crop area fractions: DINO's defaults (dinov2/dinov3 use 0.32 as the boundary).
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    # Mild colour jitter only: colour cues matter for albedo downstream.
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.1
    jitter_prob: float = 0.5
    hflip_prob: float = 0.5
    shuffle_buffer: int = 1000
    shuffle_initial: int = 100
    num_workers: int = 4


@dataclass
class OptimConfig:
    lr: float = 3e-4  # peak LR after warmup: MAE's rule 1.5e-4 x batch / 256, at a global batch of 512
    min_lr: float = 1e-6  # dinov2 `optim.min_lr`
    warmup_steps: int = 5000  # ours (dinov2: 10 epochs of 1250 iterations)
    weight_decay: float = 0.05  # MAE; pretraining sets dinov2's schedule below
    # Cosine from weight_decay at step 0 to this at the last step (dinov2: 0.04 -> 0.4); None = constant.
    weight_decay_end: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # MAE (dinov2: 0.999, dinov3: 0.99)
    layer_decay: float = 1.0  # layer-wise LR decay; 1.0 = off (pretraining), ~0.9 for fine-tuning
    clip_grad: float = 3.0  # max global grad norm; 0 = off (dinov2 `optim.clip_grad`)


@dataclass
class PretrainOptimConfig(OptimConfig):
    # dinov2's weight-decay schedule: cosine 0.04 -> 0.4 (`optim.weight_decay`, `weight_decay_end`).
    weight_decay: float = 0.04
    weight_decay_end: float | None = 0.4


@dataclass
class TrainConfig:
    steps: int = 100000  # optimiser steps
    accum_steps: int = 1  # micro-batches per optimiser step
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    strategy: str = "auto"  # auto | none | ddp | fsdp ; auto = fsdp for >= 1B params when distributed
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 2  # numbered checkpoints kept besides checkpoint-last.pt
    tensorboard: bool = False  # also write OUT/tensorboard/ (needs the optional tensorboard package)
    progress: str = "auto"  # auto (rich bar on a TTY, lines otherwise) | bar | lines | off


# Sizes of the parts that are ours, not the released backbone's: the MAE decoder and the prototype
# head. "default": MAE-style light decoder, dinov2's head. "tiny": scaled with the 64-wide test
# model (a 65536 x 256 prototype matrix alone made a tiny checkpoint ~300 MB).
SIZE_DEFAULTS: dict[str, dict[str, dict[str, int]]] = {
    "default": {
        "model": {"decoder_dim": 512, "decoder_depth": 4, "decoder_heads": 16},
        "cl": {"prototypes": 65536, "head_hidden": 2048, "head_bottleneck": 256},
    },
    "tiny": {
        "model": {"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4},
        "cl": {"prototypes": 1024, "head_hidden": 256, "head_bottleneck": 64},
    },
}


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    final_phase: FinalPhaseConfig = field(default_factory=FinalPhaseConfig)
    cl: CLConfig = field(default_factory=CLConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> PretrainConfig:
        cfg = build_dataclass(cls, tree, "")
        cfg.validate()
        return cfg

    def resolve_size_defaults(self) -> None:
        """Fill the decoder and prototype-head sizes left at None from the model size, so that the
        written config.yaml holds the numbers the run used."""
        tiny = self.model.name.startswith("sapiens2-tiny")
        for section, values in SIZE_DEFAULTS["tiny" if tiny else "default"].items():
            for key, value in values.items():
                if getattr(getattr(self, section), key) is None:
                    setattr(getattr(self, section), key, value)
        is_4k = self.model.name.endswith("-4k")
        if self.mae.output_scale is None:
            self.mae.output_scale = 0.5 if is_4k else 1.0
        if self.final_phase.steps is None:
            self.final_phase.steps = round(0.016 * self.train.steps) if is_4k else 0

    def validate(self) -> None:
        self.resolve_size_defaults()
        if not 0.0 <= self.mae.mask_ratio < 1.0:
            raise ConfigError(f"mae.mask_ratio must be in [0, 1), got {self.mae.mask_ratio}")
        if self.cl.normalization not in ("centering", "sinkhorn"):
            raise ConfigError(f"cl.normalization must be centering or sinkhorn, got {self.cl.normalization!r}")
        for key, allowed in (
            ("rope_pairing", ("halves", "pairs")),
            ("rope_dtype", ("bf16", "fp32")),
            ("tokenizer", ("released", "rope")),
        ):
            if getattr(self.model, key) not in allowed:
                raise ConfigError(f"model.{key} must be one of {allowed}, got {getattr(self.model, key)!r}")
        if self.optim.weight_decay_end is not None and self.optim.weight_decay <= 0:
            raise ConfigError("optim.weight_decay_end needs optim.weight_decay > 0 (the schedule's start)")
        if not 0.0 < self.mae.output_scale <= 1.0:
            raise ConfigError(f"mae.output_scale must be in (0, 1], got {self.mae.output_scale}")
        if self.train.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {self.train.precision!r}")
        if self.train.strategy not in ("auto", "none", "ddp", "fsdp"):
            raise ConfigError(f"train.strategy must be auto, none, ddp or fsdp, got {self.train.strategy!r}")
        if self.train.progress not in ("auto", "bar", "lines", "off"):
            raise ConfigError(f"train.progress must be auto, bar, lines or off, got {self.train.progress!r}")
        for key in ("global_size", "local_size", "global_scale", "local_scale"):
            if len(getattr(self.data, key)) != 2:
                raise ConfigError(f"data.{key} needs two values, got {getattr(self.data, key)}")
        phase = self.final_phase
        if len(phase.global_size) != 2 or not 0 <= phase.steps <= self.train.steps or phase.batch_size == 0:
            raise ConfigError(
                "final_phase needs a two-value global_size, 0 <= steps <= train.steps and batch_size >= 1"
            )
        if self.train.accum_steps < 1 or self.data.batch_size < 1 or self.train.steps < 1:
            raise ConfigError("train.steps, train.accum_steps and data.batch_size must be >= 1")


def load_pretrain_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> PretrainConfig:
    """Defaults, then the YAML file, then `fields` ("data__data" for data.data, from CLI flags), then --set."""
    return PretrainConfig.from_dict(load_tree(path, overrides, **fields))
