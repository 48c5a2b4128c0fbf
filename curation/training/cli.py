"""`curate train ...`: the trainer's commands (wired into the main CLI as `app.add_typer(train_app, name="train")`).

Under torchrun: `torchrun --nproc-per-node 8 -m curation.training.cli pretrain --data ... --out ...`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer

from curation.config import ConfigError

train_app = typer.Typer(help="Train Sapiens2-style models on curated shards.", no_args_is_help=True)


@train_app.callback()
def _group() -> None:
    """Train Sapiens2-style models on curated shards."""  # keeps `pretrain` a subcommand


@train_app.command()
def pretrain(
    data: Annotated[
        str, typer.Option(help="shards/manifest.json, a shard directory, or a pattern (local, s3://, pipe:)")
    ],
    out: Annotated[Path, typer.Option(help="Output directory: config.yaml, metrics.jsonl, checkpoints")],
    model: Annotated[
        str | None,
        typer.Option(help="Named size: sapiens2-{tiny,0.1b,0.4b,0.8b,1b,5b}[-4k]; default sapiens2-0.4b"),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file (see docs/training.md)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: --set optim.lr=1e-4")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint-last when it exists")] = True,
    init: Annotated[
        str | None,
        typer.Option(help="Start the backbone from these weights (`curate train import` output, a checkpoint)"),
    ] = None,
) -> None:
    """Joint MAE + [CLS] self-distillation pretraining of a Sapiens2 backbone."""
    from curation.training.backbone import list_sizes
    from curation.training.config import load_pretrain_config
    from curation.training.progress import require_tensorboard

    # A ConfigError reaches `curate`'s main: one line, exit 2, like every user mistake.
    cfg = load_pretrain_config(config, set_ or (), data__data=data, model__name=model, model__init=init)
    if cfg.model.name not in list_sizes():
        raise ConfigError(f"unknown model {cfg.model.name!r}; known: {', '.join(list_sizes())}")
    if cfg.train.tensorboard:
        require_tensorboard()  # refuse now, not after the model is built
    from curation.training.trainer import pretrain as run_pretrain

    history = run_pretrain(cfg, out, resume=resume)
    if history and os.environ.get("RANK", "0") == "0":
        # The last log line's averages (over its steps and all ranks), the figures metrics.jsonl holds.
        last = {"step": history[-1]["step"], **history[-1].get("logged", history[-1])}
        typer.echo(
            f"done: step {last['step']} loss {last['loss']:.4f} (mae {last['mae']:.4f}, cl {last['cl']:.4f}; "
            "averages of the last log window)"
        )


@train_app.command()
def head(
    task: Annotated[str, typer.Option(help="pose | seg | normal | pointmap | albedo")],
    data: Annotated[
        str, typer.Option(help="Labelled shards: manifest.json or a pattern (see docs/training.md)")
    ],
    out: Annotated[Path, typer.Option(help="Output directory: config.yaml, metrics.jsonl, checkpoints")],
    backbone: Annotated[str | None, typer.Option(help="Pretraining checkpoint with the backbone")] = None,
    mode: Annotated[str | None, typer.Option(help="finetune (default) | frozen")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: --set optim.lr=1e-4")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint-last when it exists")] = True,
) -> None:
    """Train a task head on a pretrained backbone (frozen, or fine-tuned with layer-wise LR decay)."""
    from curation.training.heads.config import load_head_config
    from curation.training.progress import require_tensorboard

    # A ConfigError reaches `curate`'s main: one line, exit 2, like every user mistake.
    cfg = load_head_config(
        config, set_ or (), task=task, data__data=data, model__backbone=backbone, model__mode=mode
    )
    if cfg.train.tensorboard:
        require_tensorboard()
    from curation.training.heads.trainer import train_head

    history = train_head(cfg, out, resume=resume)
    if history and os.environ.get("RANK", "0") == "0":
        typer.echo(f"done: step {history[-1]['step']} loss {history[-1]['loss']:.4f}")


def _json_safe(value):
    """NaN / inf -> None, recursively: a metric with nothing to average (no labelled pixel of a
    class) is NaN, which JSON cannot hold; `null` is what JSON readers expect."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@train_app.command("eval")
def evaluate(
    checkpoint: Annotated[
        Path, typer.Option(help="A head checkpoint (OUT/checkpoint-last of `train head`, or an exported file)")
    ],
    data: Annotated[str, typer.Option(help="Labelled shards: manifest.json or a pattern")],
    task: Annotated[str | None, typer.Option(help="Check the checkpoint is for this task")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the training batch size")] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here")] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one) | cpu | cuda | cuda:N")] = "auto",
    bf16: Annotated[bool, typer.Option(help="Run the model under bf16 autocast")] = False,
) -> None:
    """Print a trained head's metrics on a labelled shard set."""
    import json

    from curation.training.heads.evaluate import evaluate as run_eval
    from curation.training.heads.evaluate import load_head_checkpoint, resolve_device

    model, cfg = load_head_checkpoint(checkpoint, resolve_device(device))
    if task is not None and task != cfg.task:
        raise ConfigError(f"{checkpoint} is a {cfg.task} head, not {task}")
    metrics = run_eval(model, cfg, data, batch_size=batch_size, bf16=bf16)
    text = json.dumps({"task": cfg.task, **_json_safe(metrics)}, indent=2, allow_nan=False)
    typer.echo(text)
    if output is not None:
        output.write_text(text + "\n")


@train_app.command("import")
def import_(
    checkpoint: Annotated[Path, typer.Argument(help="Released checkpoint (.safetensors or torch file)")],
    out: Annotated[Path, typer.Option(help="Output file for --set model.init=FILE or head --backbone FILE")],
    from_: Annotated[str, typer.Option("--from", help="Source format: sapiens2")] = "sapiens2",
) -> None:
    """Convert released Sapiens2 weights (pretrain or task checkpoint) into our backbone layout."""
    if from_ != "sapiens2":
        raise ConfigError(f"--from {from_!r}: only sapiens2 checkpoints can be imported")
    from curation.training.import_sapiens2 import import_sapiens2

    summary = import_sapiens2(checkpoint, out)
    typer.echo(
        f"imported {summary['model']} ({summary['params'] / 1e6:.1f}M parameters, "
        f"{summary['backbone_tensors']} backbone tensors) -> {summary['out']}"
    )
    if summary["head_tensors_kept_unconverted"]:
        typer.echo(
            f"{summary['head_tensors_kept_unconverted']} task-head tensors kept unconverted under "
            "'released_head' (our heads differ from the released ones)"
        )


@train_app.command("export")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory: OUT/checkpoint-last or a numbered one")],
    out: Annotated[Path, typer.Option(help="The single consolidated file to write (.pt)")],
) -> None:
    """Join a sharded checkpoint into one file of full weights (inference, --backbone, sharing); one process."""
    from curation.training.checkpoint import export_checkpoint

    try:
        summary = export_checkpoint(checkpoint, out)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    typer.echo(
        f"exported step {summary['step']} (saved on {summary['world_size']} rank(s)): {summary['tensors']} tensors, "
        f"{summary['parameters'] / 1e6:.1f}M values -> {summary['out']}"
    )


@train_app.command("labels")
def labels(
    kind: Annotated[str, typer.Argument(help="pose | seg | normal | pointmap")],
    images: Annotated[Path, typer.Option(help="Folder of images (pose: the COCO file_name root)")],
    out: Annotated[Path, typer.Option(help="Output folder: shards, manifest.json, rejects.jsonl, summary.json")],
    annotations: Annotated[Path | None, typer.Option(help="pose: COCO / COCO-WholeBody keypoint JSON")] = None,
    masks: Annotated[Path | None, typer.Option(help="seg: folder of <stem>.png class-id masks")] = None,
    class_map: Annotated[Path | None, typer.Option(help="seg: JSON {your id: our class name | ignore}")] = None,
    maps: Annotated[Path | None, typer.Option(help="normal / pointmap: folder of <stem>.npy [H, W, 3]")] = None,
    intrinsics: Annotated[
        Path | None, typer.Option(help="pointmap: JSON {fx, fy, cx, cy} for all, or {stem: {...}}")
    ] = None,
    samples_per_shard: Annotated[int, typer.Option(help="Samples per tar")] = 1000,
) -> None:
    """Build labelled shards for `curate train head` from annotations you have; bad items are rejects."""
    from curation.training.label_sources.build import build_labels

    s = build_labels(kind, out, images, annotations=annotations, masks=masks, class_map=class_map, maps=maps,
                     intrinsics=intrinsics, samples_per_shard=samples_per_shard)  # fmt: skip
    rejects = ", ".join(f"{r}: {n}" for r, n in s["rejects"].items()) or "none"
    typer.echo(f"{kind}: {s['inputs']} inputs = {s['written']} written + {s['inputs'] - s['written']} rejected "
               f"({rejects}); {s['shards']} shard(s) -> {out / 'manifest.json'}")  # fmt: skip


@train_app.command()
def probe(
    checkpoint: Annotated[
        str, typer.Option(help="Backbone: a checkpoint, an imported file, or random:NAME for the untrained baseline")
    ],
    data: Annotated[
        list[str],
        typer.Option(help="lfw_subset ([CLS] k-NN + linear probes) and/or labelled seg shards (dense probe)"),
    ],
    size: Annotated[int, typer.Option(help="Input side in pixels (a multiple of the token stride)")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split and of random:NAME")] = 0,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON here")] = None,
) -> None:
    """Measure what a backbone's frozen features know: k-NN and linear probes on [CLS], a dense probe."""
    import json

    from curation.training.probe import run_probe

    text = json.dumps(_json_safe(run_probe(checkpoint, data, size=size, seed=seed)), indent=2, allow_nan=False)
    typer.echo(text)
    if output is not None:
        output.write_text(text + "\n")


if __name__ == "__main__":
    train_app()
