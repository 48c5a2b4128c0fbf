"""`curate train eval`: a trained head's metrics on a labelled shard set (one pass, no augmentation)."""

from __future__ import annotations

from pathlib import Path

import torch

from curation.training.checkpoint import read_checkpoint
from curation.training.data import DataPosition, SampleStream, build_loader, num_streams_for, resolve_shards
from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.labels import TaskDecoder, require_labels
from curation.training.heads.model import TaskModel, build_task_model
from curation.training.heads.tasks import TASKS


def load_head_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[TaskModel, HeadTrainConfig]:
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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto" (or None): the first GPU when there is one, else the CPU; otherwise as named."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    model: TaskModel,
    cfg: HeadTrainConfig,
    data: str,
    batch_size: int | None = None,
    max_samples: int | None = None,
    device: str | torch.device | None = None,
    bf16: bool = False,
) -> dict[str, float]:
    """Metrics of `model` over every sample of `data` (a manifest or pattern), run on `device`
    (default: where the model's weights are), with bf16 autocast when asked. Shards are read by
    `cfg.data.num_workers` loader workers; the metrics do not depend on the sample order."""
    task = TASKS[cfg.task]
    shards = resolve_shards(data)
    require_labels(shards, cfg.task)
    if device is None:  # where the weights are (a model without any stays on the CPU)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    model = model.to(device).eval()
    streams = num_streams_for(len(shards), 1, cfg.data.num_workers)
    stream = SampleStream(
        shards, TaskDecoder(cfg, train=False), DataPosition(streams), shuffle_buffer=1, shuffle_initial=1,
        shuffle_shards=False, epochs=1,
    )  # fmt: skip
    metric, seen = task.metric(), 0
    loader = build_loader(stream, batch_size or cfg.data.batch_size, cfg.data.num_workers, device.type == "cuda")
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(batch["image"])
        out = {k: v.float() for k, v in out.items()} if isinstance(out, dict) else out.float()
        task.update(metric, out, batch, cfg)
        seen += len(batch["image"])
        if max_samples is not None and seen >= max_samples:
            break
    if seen == 0:
        raise ValueError(f"{data}: no samples to evaluate")
    return {"samples": float(seen), **metric.compute()}
