"""Typed configuration: defaults < YAML file < `--set a.b=c` overrides, saved with every run.

The config is a tree of dataclasses. The top level has `run`, `filters` and one section per
registered stage, typed by that stage's own `Config` dataclass (declared in the stage's file, so a
stage and its knobs live together). Unknown keys are errors that suggest the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user mistake in the config; the CLI prints it as one line."""


@dataclass
class StageConfig:
    """Resource overrides every stage accepts; None keeps the stage's declared default."""

    batch_size: int | None = None
    gpu_batch_size: int | None = None  # the batch when the stage runs on a GPU
    num_cpus: float | None = None
    num_gpus: float | None = None
    concurrency: int | None = None  # actor pool max size for stateful stages


# Ray reuses a worker process for task after task of every op. Measured (bench/bench_scale.py,
# 100k rows): a worker that had run the phash stage's joins kept growing while it then wrote tars,
# to 575 MiB anonymous, where fresh workers stayed at 150. Two allocators held the memory: Arrow's
# jemalloc pool keeps freed pages, and glibc raises its mmap threshold after each large free, so
# later large buffers land on the never-returned heap. The system pool + a fixed mmap threshold
# gave 181 MiB at 100k rows (either alone: 408 and 572).
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "131072"}
# Model actors live for one stage's whole job, so nothing of other ops' is left in them; a 128 KiB
# threshold there made torch map fresh pages for every activation: ViT-B-32 on CPU 10-13% slower
# (measured). 32 MiB is glibc's own ceiling for its moving threshold: the speed of the default.
ACTOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432"}


@dataclass
class RunConfig:
    stages: list[str] | None = None  # None: every registered stage, in DAG order
    address: str | None = None  # Ray cluster address; None starts a local Ray
    num_cpus: int | None = None  # local Ray only; None = all cores
    object_store_mb: int | None = None  # local Ray only
    # Ray Data's target block size (None: Ray's 128 MiB). A task holds a block or two plus what it
    # builds from them, so this bounds a worker's peak once blocks are full (docs/benchmarks.md).
    max_block_mb: int | None = None
    early_filter: bool = True  # apply thresholds right after the stage whose columns they read
    fuse_cpu_stages: bool = True  # consecutive CPU map stages share one actor pool (curation/runner/fusion.py)
    seed: int = 0
    # Environment of every Ray worker (runtime_env env_vars); a variable already set in the
    # driver's environment keeps that value. The default tunes the allocators: see WORKER_ENV.
    worker_env: dict[str, str] = field(default_factory=lambda: dict(WORKER_ENV))
    actor_env: dict[str, str] = field(default_factory=lambda: dict(ACTOR_ENV))  # stage actor pools, over worker_env


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    # min_<column> / max_<column> -> threshold; null disables. Any numeric column works.
    filters: dict[str, float | None] = field(default_factory=lambda: {"min_person_short_side": 384.0})
    stages: dict[str, Any] = field(default_factory=dict)  # stage name -> its Config instance

    def stage(self, name: str) -> Any:
        return self.stages[name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": dataclasses.asdict(self.run), "filters": dict(self.filters)}
        for name, cfg in self.stages.items():
            out[name] = dataclasses.asdict(cfg)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def section_hash(self, *keys: str) -> str:
        """Hash of some top-level sections: what a stage's outputs depend on."""
        d = self.to_dict()
        blob = json.dumps({k: d.get(k) for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def hash(self) -> str:
        d = self.to_dict()
        placement_only = ("address", "num_cpus", "object_store_mb", "max_block_mb", "worker_env", "actor_env")
        d["run"] = {k: v for k, v in d["run"].items() if k not in placement_only}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _suggest(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(sorted(valid))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert a YAML value to a dataclass field's annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value or {}, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") if args else v for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {where + '.' if where else ''}{key}{_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping (shared by `curate run` and `curate train`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    loaded = yaml.safe_load(p.read_text())  # safe_load: a config never constructs objects
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return loaded or {}


def build_config(path: str | Path | None, overrides: list[str] | tuple[str, ...],
                 stage_configs: dict[str, type]) -> Config:
    """Defaults, then the YAML file, then each `key=value` override, validated against the
    sections the stages declare (`stage_configs`: name -> Config dataclass, in DAG order).
    `curation.stages.dag.load_config` supplies the DAG's stages."""
    tree: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)

    valid = ["run", "filters", *stage_configs]
    for key in tree:
        if key not in valid:
            raise ConfigError(f"unknown config key {key}{_suggest(key, valid)}")
    cfg = Config()
    if "run" in tree:
        cfg.run = build_dataclass(RunConfig, tree["run"] or {}, "run")
    if "filters" in tree:
        filters = dict(cfg.filters)
        for k, v in (tree["filters"] or {}).items():
            filters[k] = _coerce(v, float | None, f"filters.{k}")
        cfg.filters = filters
    for name, cls in stage_configs.items():
        cfg.stages[name] = build_dataclass(cls, tree.get(name) or {}, name)
    validate_filters(cfg.filters)
    if cfg.run.stages is not None:
        for s in cfg.run.stages:
            if s not in stage_configs:
                raise ConfigError(f"run.stages: unknown stage {s!r}{_suggest(s, list(stage_configs))}")
    return cfg


# Named thresholds whose key does not follow min_/max_<column>: the recipe's own vocabulary.
FILTER_ALIASES: dict[str, tuple[str, str]] = {
    "min_person_short_side": ("min", "max_person_short_side"),  # the largest person is big enough
}


def rule_target(key: str) -> tuple[str, str]:
    """(op, column) for a `filters:` key."""
    if key in FILTER_ALIASES:
        return FILTER_ALIASES[key]
    op, _, column = key.partition("_")
    return op, column


def validate_filters(filters: dict[str, float | None]) -> None:
    from curation.schema import COLUMNS

    numeric = [c for c, t in COLUMNS.items() if _is_numeric(t)]
    for key in filters:
        kind, column = rule_target(key)
        if kind not in ("min", "max") or not column:
            raise ConfigError(f"filters.{key}: filter keys are min_<column> or max_<column>")
        if column not in numeric:
            raise ConfigError(f"filters.{key}: {column!r} is not a numeric column{_suggest(column, numeric)}")


def _is_numeric(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t)
