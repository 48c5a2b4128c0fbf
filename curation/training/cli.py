"""`curate train ...`: the trainer's commands (wired into the main CLI as `app.add_typer(train_app, name="train")`).

Under torchrun: `torchrun --nproc-per-node 8 -m curation.training.cli pretrain --data ... --out ...`.
"""

from __future__ import annotations

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
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint-last.pt when it exists")] = True,
) -> None:
    """Joint MAE + [CLS] self-distillation pretraining of a Sapiens2 backbone."""
    from curation.training.backbone import list_sizes
    from curation.training.config import load_pretrain_config

    try:
        cfg = load_pretrain_config(config, set_ or (), data__data=data, model__name=model)
        if cfg.model.name not in list_sizes():
            raise ConfigError(f"unknown model {cfg.model.name!r}; known: {', '.join(list_sizes())}")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    from curation.training.trainer import pretrain as run_pretrain

    history = run_pretrain(cfg, out, resume=resume)
    if history and os.environ.get("RANK", "0") == "0":
        last = history[-1]
        typer.echo(
            f"done: step {last['step']} loss {last['loss']:.4f} (mae {last['mae']:.4f}, cl {last['cl']:.4f})"
        )


if __name__ == "__main__":
    train_app()
