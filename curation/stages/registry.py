"""Stages register by name; `curate stages`, the config and the runner read this registry."""

from __future__ import annotations

import importlib
import pkgutil

from curation.stages.base import Stage

_STAGES: dict[str, type[Stage]] = {}
_NOT_STAGE_MODULES = {"base", "registry", "filters", "dag"}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if cls.name in _STAGES and _STAGES[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice")
    _STAGES[cls.name] = cls
    return cls


def _discover() -> None:
    import curation.stages as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in _NOT_STAGE_MODULES and not mod.name.startswith("_"):
            importlib.import_module(f"curation.stages.{mod.name}")


def all_stages() -> dict[str, type[Stage]]:
    """Every registered stage, in DAG order."""
    _discover()
    return dict(sorted(_STAGES.items(), key=lambda kv: kv[1].order))


def get_stage(name: str) -> type[Stage]:
    stages = all_stages()
    if name not in stages:
        import difflib

        near = difflib.get_close_matches(name, list(stages), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        from curation.config import ConfigError

        raise ConfigError(f"unknown stage {name!r}{hint}; `curate stages` lists them")
    return stages[name]


def producer_of(column: str) -> str | None:
    for name, cls in all_stages().items():
        if column in cls.produces:
            return name
    return None
