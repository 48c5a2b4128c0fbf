"""Staging weights for offline clusters: `curate weights fetch` copies (downloading if needed)
every file a config needs into one directory with sha256 checksums in its `index.json`, and
`curate weights verify` checks a directory against that index. Resolution itself (which file a
run loads, from where) is curation/models/weights.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from curation.config import ConfigError
from curation.models.weights import (
    WeightFile,
    find,
    locate,
    missing_message,
    offline,
    read_index,
    resolve,
    sha256,
    write_index,
)


def fetch(files: list[WeightFile], to: Path, echo=print) -> dict[str, Any]:
    """Copy (downloading if needed) every file into `to`, with sha256 checksums in `to/index.json`."""
    to.mkdir(parents=True, exist_ok=True)
    index = read_index(to)
    failed: list[tuple[WeightFile, str]] = []
    for w in _unique(files):
        if w.random or w.library == "package":
            echo(f"{w.stage:10s} {w.file}: {'random (nothing to fetch)' if w.random else 'ships in its package'}")
            continue
        have = locate(w, to)
        if have is not None and index.get(have.name, {}).get("sha256") == sha256(have):
            echo(f"{w.stage:10s} {have.name}: already staged")
            continue
        src = find(w)
        if src is None or src.path.parent.resolve() == to.resolve():
            try:
                src = resolve([w])[w.file]  # downloads
            except ConfigError:
                failed.append((w, "offline" if offline(w) else "download failed"))
                echo(f"{w.stage:10s} {w.file}: MISSING (cannot download)")
                continue
        name = w.file if src.path.suffix == Path(w.file).suffix else Path(w.file).stem + src.path.suffix
        dest = to / name
        shutil.copyfile(src.path, dest.with_suffix(dest.suffix + ".part"))
        dest.with_suffix(dest.suffix + ".part").replace(dest)
        index[name] = {"sha256": sha256(dest), "bytes": dest.stat().st_size, "stage": w.stage,
                       "source": f"{w.library}:{w.ref}", "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime())}
        write_index(to, index)
        echo(f"{w.stage:10s} {name}: staged from {src.where} ({index[name]['bytes']} bytes)")
    if failed:  # every file was tried first, so one run tells the whole story
        raise ConfigError(missing_message(failed))
    return index


def verify(files: list[WeightFile], directory: Path) -> list[tuple[str, str]]:
    """(file, "ok" | problem) for every needed file and every index entry in `directory`."""
    index = read_index(directory)
    results: dict[str, str] = {}
    for w in _unique(files):
        if w.random or w.library == "package":
            continue
        hit = locate(w, directory)
        results[w.file if hit is None else hit.name] = "missing" if hit is None else "unchecked"
    for name, entry in index.items():
        p = directory / name
        if not p.is_file():
            results[name] = "missing"
        else:
            results[name] = "ok" if sha256(p) == entry.get("sha256") else "checksum mismatch"
    return [(n, "not in index" if s == "unchecked" else s) for n, s in sorted(results.items())]


def _unique(files: list[WeightFile]) -> list[WeightFile]:
    seen: dict[str, WeightFile] = {}
    for w in files:
        seen.setdefault(w.file, w)
    return list(seen.values())
