"""Stages register their class by name when their module is imported; `stages/dag.py` orders them."""

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


def registered() -> dict[str, type[Stage]]:
    """Every stage class in curation/stages/, by name (import order)."""
    import curation.stages as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in _NOT_STAGE_MODULES and not mod.name.startswith("_"):
            importlib.import_module(f"curation.stages.{mod.name}")
    return dict(_STAGES)
