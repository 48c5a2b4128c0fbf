"""Reading a trainer config tree: the YAML file, then CLI flags, then `--set key=value` overrides.
Both trainers' configs (config.py, heads/config.py) are built from such a tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from curation.config import ConfigError, parse_override, read_yaml_mapping

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_floats(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; every user means the number."""
    if isinstance(value, str) and _FLOAT.fullmatch(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _yaml_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_floats(v) for v in value]
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    node = tree
    for name in sections:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {name} is not a section")
    node[leaf] = value


def load_tree(path: str | Path | None = None, overrides=(), **fields: Any) -> dict[str, Any]:
    """Defaults-free config tree: the YAML file, then `fields` (`data__data=...` style keys from CLI
    flags, None skipped), then each `--set key=value`."""
    tree: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    for dotted, value in fields.items():
        if value is not None:
            _set_dotted(tree, dotted.replace("__", "."), value)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return _yaml_floats(tree)
