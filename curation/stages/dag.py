"""The DAG: every stage in the order a run goes through them, and what follows from that order.

A run is this list (or `run.stages`, a subsequence of it). Each stage reads columns that earlier
stages produced; a stage's fingerprint hashes its config sections and its predecessor's
fingerprint, so changing `filters` re-runs `filter` and everything after it, never a model stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from curation import __version__
from curation.config import Config, ConfigError, build_config
from curation.stages.base import Stage
from curation.stages.filters import FilterRule, parse_rules
from curation.stages.registry import registered

if TYPE_CHECKING:
    from curation.models.weights import WeightFile

DAG: tuple[str, ...] = (
    "ingest",  # read: input shards -> rows with the image bytes
    "decode",  # map: size, format, EXIF orientation; rejects what does not decode
    "detect",  # map, model: person boxes (early filter: a large enough person)
    "headpose",  # map, model: yaw/pitch/roll of the largest person's face
    "embed",  # map, model: CLIP image embedding
    "quality",  # map, model: aesthetic and realism from embed's vectors
    "text",  # map, model: text-overlay area
    "filter",  # map: every `filters:` threshold again (new thresholds re-run nothing before it)
    "phash",  # global: perceptual-hash near-duplicates
    "semdedup",  # global: CLIP-space near-duplicates
    "cluster",  # global: hierarchical k-means over the kept embeddings (fit once, cached)
    "sample",  # global: balanced draw down the cluster tree
    "shard",  # write: WebDataset tars and the manifest
)


def all_stages() -> dict[str, type[Stage]]:
    """Every stage class, in DAG order. A stage file that registers a name missing from DAG is a
    bug caught here, not a stage that silently never runs."""
    classes = registered()
    extra = sorted(set(classes) - set(DAG))
    if extra:
        raise RuntimeError(f"stage(s) {', '.join(extra)} registered but not placed in stages/dag.py DAG")
    return {name: classes[name] for name in DAG}


def run_stages(cfg: Config) -> list[str]:
    """The stages this config runs, in order."""
    return list(cfg.run.stages or DAG)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults < YAML file < `--set a.b=c` overrides, with one typed section per stage."""
    return build_config(path, overrides, {name: cls.Config for name, cls in all_stages().items()})


def get_stage(name: str) -> type[Stage]:
    stages = all_stages()
    if name not in stages:
        import difflib

        near = difflib.get_close_matches(name, list(stages), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown stage {name!r}{hint}; `curate stages` lists them")
    return stages[name]


def producer_of(column: str) -> str | None:
    for name, cls in all_stages().items():
        if column in cls.produces:
            return name
    return None


def fingerprints(cfg: Config, names: list[str]) -> dict[str, str]:
    fps, prev = {}, __version__
    for name in names:
        stage = get_stage(name)(cfg)
        blob = json.dumps([name, cfg.section_hash(*stage.config_sections()), prev])
        prev = fps[name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return fps


def check_filters(cfg: Config, names: list[str]) -> None:
    """Every `filters:` rule reads a column that a stage of this run produces."""
    for rule in parse_rules(cfg.filters):
        producer = producer_of(rule.column)
        if producer is None or producer not in names:
            raise ConfigError(f"filters.{rule.key} reads {rule.column!r}, which no stage in this run produces "
                              f"(set filters.{rule.key}=null or add its stage)")


def early_rules(stage: Stage, cfg: Config) -> list[FilterRule]:
    """The rules applied right after `stage` (those on the columns it produces)."""
    if not cfg.run.early_filter:
        return []
    return [r for r in parse_rules(cfg.filters) if r.column in stage.produces]


def weight_files(cfg: Config) -> list[WeightFile]:
    """The weight files of every model stage this config runs."""
    return [w for name in run_stages(cfg) for w in getattr(get_stage(name)(cfg), "weight_files", list)()]
