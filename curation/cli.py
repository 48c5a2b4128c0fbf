"""`curate`: the command line. User mistakes print one line and exit 2; `--debug` shows tracebacks."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from curation.config import ConfigError, load_config
from curation.io.inputs import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate human-centric image datasets and train on them.")
manifest_app = typer.Typer(no_args_is_help=True, help="Shard manifests.")
app.add_typer(manifest_app, name="manifest")
console = Console(stderr=True)
out = Console()
STATE = {"debug": False}


def _add_optional_apps() -> None:
    """Sub-apps that live with their subsystems (weights with the models, train with the trainer)."""
    try:
        from curation.models.weights_cli import weights_app

        app.add_typer(weights_app, name="weights", help="Stage, list and verify model weights.")
    except ImportError:
        pass
    try:
        from curation.training.cli import train_app

        app.add_typer(train_app, name="train", help="Pretrain the backbone and post-train task heads.")
    except ImportError:
        pass


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    STATE["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("stages")
def stages_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered stages: name, kind, columns, rejects and resources."""
    from curation.stages.registry import all_stages

    rows = []
    for name, cls in all_stages().items():
        r = cls.resources
        rows.append({"name": name, "kind": cls.kind, "requires": list(cls.requires), "produces": list(cls.produces),
                     "rejects": list(cls.rejects), "num_cpus": r.num_cpus, "num_gpus": r.num_gpus,
                     "batch_size": r.batch_size, "stateful": cls.stateful, "description": cls.description})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="curation stages (DAG order)")
    for col in ("stage", "kind", "adds columns", "rejects", "cpus", "gpus", "batch", "actor"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], ", ".join(r["produces"]) or "-", ", ".join(r["rejects"]) or "-",
                      str(r["num_cpus"]), str(r["num_gpus"]), str(r["batch_size"]), "yes" if r["stateful"] else "")
    out.print(table)


@app.command("run")
def run_cmd(
    input: str = typer.Option(..., "--input", "-i", help="Crawl (folder, URL list, tars; local or s3://), "
                                                         "or a previous run folder with --stage."),
    output: str = typer.Option(..., "--output", "-o", help="Run folder (local or s3://)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Run only this stage."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: a.b=c (repeatable)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster instead of starting one."),
    reconfigure: bool = typer.Option(False, "--reconfigure", help="Accept a changed config for an existing "
                                                                   "output; only affected stages re-run."),
) -> None:
    """Run the whole DAG, or one stage, and print the funnel."""
    from curation.pipeline import run_pipeline
    from curation.progress import LineProgress

    cfg = load_config(config, set_)
    if address:
        cfg.run.address = address
    if stage is None and not _exists(input):
        raise InputError(f"input not found: {input}")
    summary = run_pipeline(cfg, input, output, stage=stage, reconfigure=reconfigure, on_event=LineProgress(console))
    _print_funnel(summary)
    if not summary["balanced"]:
        console.print(f"[red]accounting does not balance: inputs {summary['inputs']} != kept {summary['kept']} "
                      f"+ rejected {summary['rejected']}[/red]")
        raise typer.Exit(1)


def _exists(uri: str) -> bool:
    from curation.io import fs

    return fs.exists(uri)


def _print_funnel(summary: dict) -> None:
    table = Table(title=f"inputs {summary['inputs']} -> kept {summary['kept']}")
    for col in ("stage", "shards", "in", "kept", "rejects"):
        table.add_column(col)
    for name, s in summary["stages"].items():
        rejects = ", ".join(f"{k} {v}" for k, v in s["rejects"].items()) or "-"
        table.add_row(name, f"{s['shards_done']}/{s['shards_total']}", str(s["in"]), str(s["kept"]), rejects)
    out.print(table)
    if "shards" in summary:
        out.print(f"shards: {summary['shards']['files']} tars, {summary['shards']['samples']} samples")


@app.command("status")
def status_cmd(run_dir: str = typer.Argument(..., help="A run folder."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Per stage: shards done/total, kept, rejects by reason."""
    from curation.io import fs
    from curation.manifests.ledger import summarize
    from curation.manifests.store import RunStore
    from curation.pipeline import dag_names

    if not fs.exists(fs.join(run_dir, "run.json")):
        raise InputError(f"not a run folder (no run.json): {run_dir}")
    cfg_path = fs.join(run_dir, "config.yaml")
    import yaml

    tree = yaml.safe_load(fs.read_bytes(cfg_path)) or {}
    from curation.stages.registry import all_stages

    names = (tree.get("run") or {}).get("stages") or list(all_stages())
    summary = summarize(RunStore(run_dir), names)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        _print_funnel(summary)
    _ = dag_names


@manifest_app.command("verify")
def manifest_verify(manifest: str = typer.Argument(..., help="Path or URI of shards/manifest.json.")) -> None:
    """Check every shard's size, sha256 and sample count against the manifest."""
    from curation.io import fs
    from curation.manifests.manifest import verify_manifest

    if not fs.exists(manifest):
        raise InputError(f"manifest not found: {manifest}")
    problems = verify_manifest(manifest)
    m = fs.read_json(manifest)
    if problems:
        for p in problems:
            console.print(f"[red]FAIL[/red] {p}")
        raise typer.Exit(1)
    out.print(f"OK: {len(m['shards'])} shards, {m['counts']['samples']} samples verified")


@app.command("sample-crawl")
def sample_crawl_cmd(
    out_dir: str = typer.Argument(..., help="Where to write the crawl."),
    form: str = typer.Option("folder", "--format", help="folder | urls | tars"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build a small crawl from photos that installed packages carry, with variants for every filter."""
    from curation.sample_crawl import build_sample_crawl

    info = build_sample_crawl(out_dir, form=form, seed=seed)
    out.print(f"wrote {info['images']} items ({info['broken']} broken) to {out_dir} as {form}")


def main() -> None:
    _add_optional_apps()
    try:
        app(standalone_mode=False)
    except (ConfigError, InputError) as exc:
        if STATE["debug"]:
            raise
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if STATE["debug"]:
            raise
        console.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", markup=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
