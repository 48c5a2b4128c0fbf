"""`curate train eval`: a trained head's metrics on a labelled shard set (one pass, no augmentation)."""

from __future__ import annotations

from pathlib import Path

import torch

from curation.training.checkpoint import read_checkpoint
from curation.training.data import DataPosition, SampleStream, build_loader, resolve_shards
from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.labels import TaskDecoder, require_labels
from curation.training.heads.model import TaskModel, build_task_model
from curation.training.heads.tasks import TASKS


def load_head_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[TaskModel, HeadTrainConfig]:
    state = read_checkpoint(path)  # a checkpoint directory or a consolidated file
    if "head" not in state:
        raise ValueError(f"{path} is not a head checkpoint (it has no 'head'; a pretraining checkpoint?)")
    cfg = HeadTrainConfig.from_dict(state["config"])
    # The architecture from the config (name and window_layers, which build_task_model recorded
    # at training time), the weights from the checkpoint.
    cfg.model.init = "random"
    model = build_task_model(cfg)
    model.backbone.load_state_dict(state["backbone"])
    model.head.load_state_dict(state["head"])
    return model.to(device).eval(), cfg


@torch.no_grad()
def evaluate(
    model: TaskModel,
    cfg: HeadTrainConfig,
    data: str,
    batch_size: int | None = None,
    max_samples: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Metrics of `model` over every sample of `data` (a manifest or pattern), in shard order."""
    task = TASKS[cfg.task]
    shards = resolve_shards(data)
    require_labels(shards, cfg.task)
    stream = SampleStream(
        shards, TaskDecoder(cfg, train=False), DataPosition(1), shuffle_buffer=1, shuffle_initial=1,
        shuffle_shards=False, epochs=1,
    )  # fmt: skip
    metric, seen = task.metric(), 0
    model.eval()
    for batch in build_loader(stream, batch_size or cfg.data.batch_size, num_workers=0):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        task.update(metric, model(batch["image"]), batch, cfg)
        seen += len(batch["image"])
        if max_samples is not None and seen >= max_samples:
            break
    if seen == 0:
        raise ValueError(f"{data}: no samples to evaluate")
    return {"samples": float(seen), **metric.compute()}
