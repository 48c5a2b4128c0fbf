"""Typed post-training config: defaults < YAML file < CLI flags < `--set a.b=c`. Saved like pretraining's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.config import ConfigError, build_dataclass
from curation.training.config import OptimConfig, TrainConfig
from curation.training.config_tree import load_tree

TASKS = ("pose", "seg", "normal", "pointmap", "albedo")


@dataclass
class HeadModelConfig:
    backbone: str = ""  # a pretraining checkpoint (its student backbone and its config's model name)
    init: str = "checkpoint"  # or "random": an untrained backbone of `name`, only when asked by name
    name: str = "sapiens2-0.4b"  # with init=random; from the checkpoint otherwise
    # 4K variant: local-stage depth; None = the name's default. Set from the backbone when built,
    # so a head checkpoint rebuilds the pretraining run's architecture even when it overrode this.
    window_layers: int | None = None
    # Architecture options (backbone.ARCH_OPTIONS), released values by default; set from the
    # backbone when built, like window_layers.
    rope_pairing: str = "halves"
    rope_dtype: str = "bf16"
    layer_scale_ffn: bool = False
    tokenizer: str = "released"
    # The head's output resolution as a fraction of the input. None = 0.5 for the 4K variants (the
    # paper decodes them at 2K: a 4096x3072 input gives 2048x1536 maps), 1.0 otherwise. Set when
    # the model is built, so that a head checkpoint records it; labels and metrics follow it.
    output_scale: float | None = None
    mode: str = "finetune"  # finetune (layer-wise LR decay) | frozen (only the head trains)
    channels: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32])  # dense decoder widths
    pose_channels: int = 256  # deconv width of the pose head
    grad_checkpointing: bool = False  # recompute backbone block activations in backward (1b, 5b)


@dataclass
class HeadDataConfig:
    data: str = ""  # labelled shards: manifest.json or a pattern
    batch_size: int = 16
    input_size: list[int] = field(default_factory=lambda: [1024, 768])  # H, W
    scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # dense: random-resized-crop area
    hflip_prob: float = 0.5
    rotation: float = 30.0  # pose: max degrees
    box_scale: list[float] = field(default_factory=lambda: [0.75, 1.25])  # pose: box size jitter
    box_padding: float = 1.25  # pose: crop = box x padding
    augment: bool = True
    shuffle_buffer: int = 1000
    shuffle_initial: int = 100
    num_workers: int = 4


@dataclass
class HeadLossConfig:
    heatmap_sigma: float = 2.0
    ohkm_topk: int = 8
    ohkm_weight: float = 1.0
    class_weights: list[float] | None = None  # seg: 29 weights; None = all 1
    dice_weight: float = 1.0
    l1_weight: float = 1.0
    grad_weight: float = 1.0
    chroma_weight: float = 1.0
    scale_weight: float = 1.0
    canonical_focal: float = 1000.0  # pointmap: pixels, at the input resolution


@dataclass
class HeadTrainConfig:
    task: str = "seg"
    model: HeadModelConfig = field(default_factory=HeadModelConfig)
    data: HeadDataConfig = field(default_factory=HeadDataConfig)
    loss: HeadLossConfig = field(default_factory=HeadLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=500, layer_decay=0.9))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=20000, ckpt_every=1000))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> HeadTrainConfig:
        cfg = build_dataclass(cls, tree, "")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.optim.weight_decay_end is not None:
            raise ConfigError("optim.weight_decay_end is a pretraining schedule; head training keeps weight_decay")
        if self.model.init not in ("checkpoint", "random"):
            raise ConfigError(f"model.init must be checkpoint or random, got {self.model.init!r}")
        if self.model.init == "checkpoint" and not self.model.backbone:
            raise ConfigError(
                "no backbone: give --backbone CHECKPOINT, or --set model.init=random to train from scratch"
            )
        if self.model.mode not in ("finetune", "frozen"):
            raise ConfigError(f"model.mode must be finetune or frozen, got {self.model.mode!r}")
        if len(self.data.input_size) != 2 or any(s % 16 for s in self.data.input_size):
            raise ConfigError(f"data.input_size must be two multiples of 16, got {self.data.input_size}")
        if self.model.output_scale is not None and not 0.0 < self.model.output_scale <= 1.0:
            raise ConfigError(f"model.output_scale must be in (0, 1], got {self.model.output_scale}")
        if self.loss.class_weights is not None and len(self.loss.class_weights) != 29:
            raise ConfigError("loss.class_weights needs 29 values, one per body-part class")


def output_scale(cfg: HeadTrainConfig) -> float:
    """`model.output_scale`, or its default for the configured backbone where it is still None."""
    from curation.training.backbone import default_window_layers

    model = cfg.model
    if model.output_scale is not None:
        return model.output_scale
    window = model.window_layers if model.window_layers is not None else default_window_layers(model.name)
    return 0.5 if window else 1.0


def output_size(cfg: HeadTrainConfig) -> tuple[int, int]:
    """(H, W) of the head's output maps: the input size times `output_scale`."""
    scale = output_scale(cfg)
    H, W = cfg.data.input_size
    return round(H * scale), round(W * scale)


def load_head_config(path: str | Path | None = None, overrides=(), **fields: Any) -> HeadTrainConfig:
    return HeadTrainConfig.from_dict(load_tree(path, overrides, **fields))
