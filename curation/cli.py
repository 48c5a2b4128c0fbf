"""`curate`: the command line. User mistakes print one line and exit 2; `--debug` shows tracebacks."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from curation.config import ConfigError
from curation.io.inputs import InputError
from curation.stages.dag import load_config

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
        from curation.weights_cli import weights_app

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
def stages_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable, one object per stage.")) -> None:
    """The DAG (curation/stages/dag.py) in run order: each stage's kind, columns, rejects and resources."""
    from curation.stages.dag import all_stages

    rows = []
    for name, cls in all_stages().items():
        r = cls.resources
        rows.append({"name": name, "kind": cls.kind, "requires": list(cls.requires), "produces": list(cls.produces),
                     "rejects": list(cls.rejects), "num_cpus": r.num_cpus, "num_gpus": r.num_gpus,
                     "batch_size": r.batch_size, "gpu_batch_size": r.gpu_batch_size, "stateful": cls.stateful,
                     "description": cls.description})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    header = ("stage", "kind", "cpus", "gpus", "batch", "actor", "adds columns", "rejects")
    cells = [(r["name"], r["kind"], str(r["num_cpus"]), str(r["num_gpus"]), str(r["batch_size"]),
              "yes" if r["stateful"] else "", ", ".join(r["produces"]) or "-", ", ".join(r["rejects"]) or "-")
             for r in rows]
    if out.is_terminal:
        table = Table(title="curation stages (DAG order)", caption=BATCH_RULE)
        for col in header:
            table.add_column(col)
        for row in cells:
            table.add_row(*row)
        out.print(table)
        return
    # A pipe, a log, CI: full width, plain text, nothing cut to "…".
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    for row in [header, *cells]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    typer.echo(BATCH_RULE)


BATCH_RULE = ("batch: rows per call on a CPU (gpus: on a GPU, gpu_batch_size). Consecutive CPU model stages run "
              "in one actor, fed batches of the smallest model batch there, or of any larger batch_size you set; "
              "each stage then works in its own batch size.")


@app.command("run")
def run_cmd(
    input: str = typer.Option(..., "--input", "-i", help="Crawl (folder, URL list, tars; local or s3://), "
                                                         "or a previous run folder with --stage."),
    output: str = typer.Option(..., "--output", "-o", help="Run folder (local or s3://)."),
    stage: str | None = typer.Option(None, "--stage", help="Run only this stage."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: a.b=c (repeatable)."),
    address: str | None = typer.Option(None, "--address", help="Join this Ray cluster instead of starting one."),
    reconfigure: bool = typer.Option(False, "--reconfigure", help="Accept a changed config for an existing "
                                                                   "output; only affected stages re-run."),
) -> None:
    """Run the whole DAG, or one stage, and print the funnel."""
    from curation.progress.live import LiveProgress, progress_for
    from curation.progress.ray_log import ray_lines_to
    from curation.runner.pipeline import run_pipeline

    cfg = load_config(config, set_)
    if address:
        cfg.run.address = address
    if stage is not None:
        from curation.stages.dag import get_stage

        get_stage(stage)  # an unknown name fails here, before Ray starts
    if not _exists(input):
        what = "a run folder (the --output of an earlier run)" if stage not in (None, "ingest") else \
            "an image folder, a URL list (.parquet/.csv/.tsv/.jsonl), WebDataset .tars, or an s3:// URI"
        raise InputError(f"input not found: {input}; --input takes {what}")
    progress = progress_for(console)
    # Ray's own lines (its C++ core's warnings, its loggers) go to OUT/logs/ray.log; --debug keeps them here.
    ray_log = nullcontext() if STATE["debug"] else ray_lines_to(output)
    with ray_log as log, progress if isinstance(progress, LiveProgress) else nullcontext():
        summary = run_pipeline(cfg, input, output, stage=stage, reconfigure=reconfigure, on_event=progress)
    if log is not None and log.path:
        console.print(f"Ray's own messages: {log.path}", style="dim", highlight=False, soft_wrap=True)
    _print_funnel(summary)
    _print_ingest_line(summary)
    if not summary["complete"]:
        from curation.progress.status_view import next_stage

        following = next_stage(summary)
        out.print(f"run incomplete: {following!r} comes next; continue with "
                  f"`curate run --stage {following} --input {output} --output {output}` "
                  f"(or the whole run again: finished shards are skipped)", highlight=False, soft_wrap=True)
        if stage is None:  # a whole run that ends incomplete lost work somewhere
            raise typer.Exit(1)
        return
    if not summary["balanced"]:
        console.print(f"[red]accounting does not balance: inputs {summary['inputs']} != kept {summary['kept']} "
                      f"+ rejected {summary['rejected']}[/red]")
        raise typer.Exit(1)


def _exists(uri: str) -> bool:
    from curation.io import fs

    try:
        return fs.exists(uri)
    except OSError as exc:  # an unreachable endpoint or bucket, a refused credential
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"cannot reach {uri}: {first}") from None


def _print_ingest_line(summary: dict) -> None:
    """How many items the input held and what ingest refused, in one line after the funnel."""
    ingest = summary.get("stages", {}).get("ingest")
    if not ingest:
        return
    rejects = ingest["rejects"]
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(rejects.items(), key=lambda kv: (-kv[1], kv[0])))
    n = sum(rejects.values())
    out.print(f"found {ingest['in']} item{'s' if ingest['in'] != 1 else ''}; rejected at ingest: {n}"
              + (f" ({by_reason})" if by_reason else ""), highlight=False, soft_wrap=True)


def _print_funnel(summary: dict) -> None:
    from curation.progress.status_view import status_table

    out.print(status_table(summary))


@app.command("status")
def status_cmd(run_dir: str = typer.Argument(..., help="A run folder."),
               as_json: bool = typer.Option(False, "--json", help="The ledger as JSON, for scripts.")) -> None:
    """Per stage: shards done/total, kept, rejects by reason, throughput."""
    from curation.progress.status_view import run_summary

    summary = run_summary(run_dir)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        _print_funnel(summary)


@app.command("report")
def report_cmd(run_dir: str = typer.Argument(..., help="A run folder."),
               report_dir: str | None = typer.Option(None, "--out", help="Where to write (default OUT/report)."),
               open_: bool = typer.Option(False, "--open", help="Open the report in a web browser."),
               max_shards: int = typer.Option(200, "--max-shards", help="Input shards read for plots and galleries "
                                                                          "(counts are always exact).")) -> None:
    """A self-contained HTML report: funnel, rejects, score histograms, clusters, duplicates, galleries."""
    from curation.report.build import build_report, local_file_uri, open_in_browser

    uri = build_report(run_dir, report_dir, max_shards=max_shards)
    out.print(f"report: {uri}", highlight=False)
    if open_ and local_file_uri(uri) is None:
        console.print(f"--open opens local reports only; copy {uri} here first, or give --out a local folder",
                      highlight=False)
    elif open_ and not open_in_browser(uri):
        console.print(f"no web browser found; open {uri} yourself", highlight=False)


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

        # typer >= 0.2x raises its own vendored click's exceptions (typer.BadParameter is not a
        # click.ClickException); both kinds are usage errors with their own message and code.
        if isinstance(exc, (click.exceptions.ClickException, typer.TyperException)) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.exit(130)
        if STATE["debug"]:
            raise
        console.print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", markup=False,
                      soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
