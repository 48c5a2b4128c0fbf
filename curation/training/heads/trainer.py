"""Post-training loop: a task head on a pretrained backbone (frozen, or fine-tuned with layer-wise LR decay).

The same machinery as pretraining (engine.py): resumable WebDataset streams, AdamW +
warmup/cosine, bf16 on GPU, gradient accumulation and clipping, a loud stop on a non-finite loss,
exact-resume checkpoints, and DDP or FSDP2 (`train.strategy`; auto = FSDP from 1B parameters)
under torchrun. Logged losses are means over the ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.training import distributed as D
from curation.training.data import num_streams_for, resolve_shards
from curation.training.engine import Session, Window, seed_all
from curation.training.heads.config import HeadTrainConfig
from curation.training.heads.labels import TaskDecoder, require_labels
from curation.training.heads.model import build_task_model
from curation.training.heads.tasks import TASKS
from curation.training.optim import build_optimizer, build_scheduler


def train_head(cfg: HeadTrainConfig, out_dir: str | Path, resume: bool = True) -> list[dict[str, Any]]:
    """Train (or resume) a task head into `out_dir`; returns this process's per-step losses."""
    cfg.validate()
    t, task = cfg.train, TASKS[cfg.task]
    shards = resolve_shards(cfg.data.data)
    require_labels(shards, cfg.task)  # refusals before the model is built
    run = Session(t, out_dir, resume)
    info = run.info
    seed_all(t.seed)  # identical initial head weights on every rank
    model = build_task_model(cfg).to(info.device)
    model.backbone.set_grad_checkpointing(cfg.model.grad_checkpointing)
    strategy = D.resolve_strategy(t.strategy, sum(p.numel() for p in model.backbone.parameters()), info)
    wrapped = model
    if strategy == "fsdp":
        D.shard_task_model(model, info, run.bf16)  # in place: the optimiser sees this rank's shards
    elif strategy == "ddp":
        wrapped = D.wrap_ddp(model, info)
    optimizer = build_optimizer(model, model.backbone, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, t.steps)
    seed_all(t.seed + 1000 * info.rank)

    num_streams = num_streams_for(len(shards), info.world_size, cfg.data.num_workers)
    run.restore(model, optimizer, scheduler, num_streams, cfg.to_dict())
    batches = run.batches(shards, TaskDecoder(cfg, train=True), cfg.data)
    started = f"head {cfg.task} on {cfg.model.name} ({cfg.model.mode}): {len(shards)} shards"
    run.open_log(f"head:{cfg.task}", started, strategy)

    images_per_step = cfg.data.batch_size * t.accum_steps * info.world_size
    H, W = cfg.data.input_size
    stride = model.backbone.token_stride  # 64 on the 4K variant's pooled grid
    tokens_per_step = images_per_step * (H // stride) * (W // stride)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def forward(batch):
        with run.autocast():
            output = wrapped(batch["image"])
        return task.loss(output, batch, cfg)

    history: list[dict[str, Any]] = []
    window = Window()
    model.train()
    while run.step < t.steps:
        parts = run.micro_steps(wrapped, batches, forward)
        run.finish_step(optimizer, scheduler, trainable, cfg.optim.clip_grad)
        history.append({"step": run.step, **parts})
        window.add(parts)
        if run.due(t.log_every):
            metrics, n = window.means(info)  # collective: every rank takes part
            if run.logger is not None:
                metrics["lr"] = max(scheduler.get_last_lr())
                run.logger.log(run.step, metrics, images_per_step * n, tokens_per_step * n)
        if run.due(t.ckpt_every):
            run.save(model, optimizer, scheduler, cfg.to_dict())
    run.close()
    return history
