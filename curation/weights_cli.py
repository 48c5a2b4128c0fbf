"""`curate weights fetch|list|verify`: stage model weights for offline clusters.

Every command reads the same config as `curate run` (`--config FILE`, `--set k=v`), so it acts on
exactly the weights that run would load: change `embed.model` and `fetch` stages the new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from curation.config import ConfigError
from curation.models import weight_staging
from curation.models import weights as W
from curation.stages.dag import load_config, weight_files

weights_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="Stage, list and verify model weights.")

_CONFIG = typer.Option(None, "--config", "-c", help="YAML config (as for `curate run`).")
_SET = typer.Option([], "--set", help="Override a config key: a.b=c (repeatable).")
_TO = typer.Option(None, "--to", help=f"Directory (default ${W.ENV_DIR}).")
_DIR = typer.Option(None, "--dir", help=f"Directory (default ${W.ENV_DIR}).")


def _dir(given: Path | None, verb: str) -> Path:
    d = given or W.weights_dir()
    if d is None:
        raise ConfigError(f"weights {verb}: give --to/--dir DIR or set {W.ENV_DIR}")
    return d


@weights_app.command("fetch")
def fetch_cmd(to: Path | None = _TO, config: Path | None = _CONFIG, set_: list[str] = _SET) -> None:
    """Download (or copy from caches) every weight the config needs into DIR, with sha256s in index.json."""
    cfg = load_config(config, set_)
    dest = _dir(to, "fetch")
    weight_staging.fetch(weight_files(cfg), dest, echo=typer.echo)
    typer.echo(f"staged in {dest}; on the offline machine: export {W.ENV_DIR}={dest.resolve()}")


@weights_app.command("list")
def list_cmd(config: Path | None = _CONFIG, set_: list[str] = _SET,
             as_json: bool = typer.Option(False, "--json")) -> None:
    """What the config needs and where each file is found now (nothing is downloaded)."""
    cfg = load_config(config, set_)
    record = W.weights_record(weight_files(cfg))
    if as_json:
        typer.echo(json.dumps(record, indent=1))
        return
    for r in record:
        where = {"random": "RANDOM INIT (weights: random)", "missing": "MISSING"}.get(r["where"], r["where"])
        typer.echo(f"{r['stage']:10s} {r['file']:58s} {where:16s} {r['path'] or ''}")
    missing = sorted({r["file"] for r in record if r["where"] == "missing"})
    if missing:
        typer.echo(f"{len(missing)} missing: `curate weights fetch --to DIR` (same --config/--set) stages them")


@weights_app.command("verify")
def verify_cmd(directory: Path | None = _DIR, config: Path | None = _CONFIG, set_: list[str] = _SET) -> None:
    """Check the staged files against index.json (sha256) and that the config's files are all there."""
    cfg = load_config(config, set_)
    d = _dir(directory, "verify")
    if not d.is_dir():
        raise ConfigError(f"weights verify: {d} is not a directory")
    results = weight_staging.verify(weight_files(cfg), d)
    bad = [(f, s) for f, s in results if s in ("missing", "checksum mismatch")]
    for f, s in results:
        typer.echo(f"{'OK  ' if s == 'ok' else 'FAIL' if (f, s) in bad else 'WARN'} {f}: {s}")
    if bad:
        raise typer.Exit(1)
    typer.echo(f"OK: {sum(s == 'ok' for _, s in results)} files verified in {d}")
