"""Weight files: which ones a config needs, where each is found, and how to stage them offline.

Resolution order (DESIGN.md), first hit wins:
  1. an explicit path in the stage's config (`detect.weights: /models/yolo11n.pt`),
  2. `$CURATE_WEIGHTS/<file>` (a directory filled by `curate weights fetch`, with `index.json`),
  3. the library's own cache (ultralytics weights_dir, the Hugging Face cache, torch hub),
  4. the library's own download, unless offline.
Missing after that is a `ConfigError` raised from the stage's `check()`, before any work, naming
every missing file and the command that stages it. `weights: random` is the only way to get a
randomly initialised model, and `weights_record(files)` reports it for the run's manifest.

Staging (`curate weights fetch|verify`) is curation/models/weight_staging.py.

Offline: `CURATE_OFFLINE=1`, or the library's own flag (`YOLO_OFFLINE` for ultralytics,
`HF_HUB_OFFLINE` for open_clip), or the download host not answering within 3 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from curation.config import ConfigError

RANDOM = "random"
ENV_DIR = "CURATE_WEIGHTS"
INDEX = "index.json"
_HOSTS = {"ultralytics": "github.com", "open_clip": "huggingface.co"}


@dataclass(frozen=True)
class WeightFile:
    stage: str  # the stage that needs it
    key: str  # config key that takes an explicit path, e.g. "detect.weights"
    file: str  # name under $CURATE_WEIGHTS and in its index
    library: str  # "ultralytics" | "open_clip" | "url" | "package" (ships inside a pip package)
    ref: str  # asset name, "model:tag", URL, or the packaged file's path
    explicit: str | None = None
    random: bool = False
    alternatives: tuple[str, ...] = ()  # other accepted names (the same weights in another format)


@dataclass(frozen=True)
class Found:
    path: Path
    where: str  # config | $CURATE_WEIGHTS | library cache | package | download


def weights_dir() -> Path | None:
    d = os.environ.get(ENV_DIR)
    return Path(d).expanduser() if d else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_index(directory: Path) -> dict[str, Any]:
    p = directory / INDEX
    return json.loads(p.read_text())["files"] if p.is_file() else {}


def write_index(directory: Path, files: dict[str, Any]) -> None:
    tmp = directory / (INDEX + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    tmp.replace(directory / INDEX)  # atomic: an interrupted fetch never leaves a torn index


def locate(w: WeightFile, directory: Path) -> Path | None:
    for name in (w.file, *w.alternatives):
        if (directory / name).is_file():
            return directory / name
    return None


def _in_dir(w: WeightFile, directory: Path) -> Path | None:
    """The staged file, refusing one whose size disagrees with the index (a torn copy)."""
    index = read_index(directory)
    for name in (w.file, *w.alternatives):
        p = directory / name
        if p.is_file():
            entry = index.get(name)
            if entry and entry.get("bytes") not in (None, p.stat().st_size):
                raise ConfigError(f"{p}: size differs from {directory / INDEX} (partial copy?); "
                                  f"run `curate weights fetch --to {directory}` again")
            return p
    return None


def _library_cache(w: WeightFile) -> Path | None:
    if w.library == "ultralytics":
        from curation.models.ultralytics_import import import_ultralytics

        import_ultralytics()
        from ultralytics.utils import SETTINGS

        p = Path(SETTINGS["weights_dir"]) / w.ref
        return p if p.is_file() else None
    if w.library == "open_clip":
        import huggingface_hub
        import open_clip

        model, tag = w.ref.split(":", 1)
        cfg = open_clip.get_pretrained_cfg(model, tag)
        if cfg.get("hf_hub"):
            # open_clip's convention: "org/repo/" (default file names) or "org/repo/file.bin";
            # it prefers a .safetensors twin when the repo has one, so look for that first.
            repo, name = os.path.split(cfg["hf_hub"])
            names = ([name[:-4] + ".safetensors", name] if name.endswith((".bin", ".pth")) else [name]) if name \
                else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for n in names:
                hit = huggingface_hub.try_to_load_from_cache(repo, n)
                if isinstance(hit, str):
                    return Path(hit)
        if cfg.get("url"):
            p = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(cfg["url"]).path)
            return p if p.is_file() else None
        return None
    if w.library == "url":
        import torch

        p = Path(torch.hub.get_dir()) / "checkpoints" / w.file
        return p if p.is_file() else None
    return None


def find(w: WeightFile) -> Found | None:
    """Where the file is now, without downloading; None when it is nowhere (or random)."""
    if w.random:
        return None
    if w.explicit:
        p = Path(w.explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"{w.key}: {p} does not exist; fix the path, or unset {w.key} to look in "
                              f"${ENV_DIR} and the library caches")
        return Found(p, "config")
    if w.library == "package":
        return Found(Path(w.ref), "package") if Path(w.ref).is_file() else None
    d = weights_dir()
    if d is not None and (p := _in_dir(w, d)) is not None:
        return Found(p, f"${ENV_DIR}")
    p = _library_cache(w)
    return Found(p, "library cache") if p is not None else None


def offline(w: WeightFile) -> bool:
    flags = ["CURATE_OFFLINE", {"ultralytics": "YOLO_OFFLINE", "open_clip": "HF_HUB_OFFLINE"}.get(w.library)]
    if any(f and os.environ.get(f, "").lower() in ("1", "true", "yes", "on") for f in flags):
        return True
    host = _HOSTS.get(w.library) or urlparse(w.ref).hostname or "github.com"
    try:  # one cheap probe instead of a library's retry loop (open_clip retries ~46 s offline)
        socket.create_connection((host, 443), timeout=3).close()
        return False
    except OSError:
        return True


def download(w: WeightFile) -> Path:
    """The library's own download into the library's own cache; returns the file."""
    if w.library == "ultralytics":
        from curation.models.ultralytics_import import import_ultralytics

        import_ultralytics()
        from ultralytics.utils import SETTINGS
        from ultralytics.utils.downloads import attempt_download_asset

        dest = Path(SETTINGS["weights_dir"]) / w.ref
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(attempt_download_asset(str(dest)))
    if w.library == "open_clip":
        import open_clip

        model, tag = w.ref.split(":", 1)
        return Path(open_clip.download_pretrained(open_clip.get_pretrained_cfg(model, tag)))
    if w.library == "url":
        import torch

        dest = Path(torch.hub.get_dir()) / "checkpoints" / w.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(w.ref, str(dest), progress=False)
        return dest
    raise ConfigError(f"{w.file} ships inside a package and cannot be downloaded; reinstall it")


def resolve(files: list[WeightFile], allow_download: bool = True) -> dict[str, Found]:
    """Every non-random file found (downloading when allowed and online), or one ConfigError."""
    found: dict[str, Found] = {}
    missing: list[tuple[WeightFile, str]] = []
    for w in files:
        if w.random:
            continue
        hit = find(w)
        if hit is None and allow_download and w.library != "package":
            if offline(w):
                missing.append((w, "offline"))
                continue
            try:
                hit = Found(download(w), "download")
            except Exception as e:  # noqa: BLE001 - any download failure is a missing file
                missing.append((w, f"download failed: {type(e).__name__}"))
                continue
        if hit is None or not hit.path.is_file():
            missing.append((w, "not found"))
        else:
            found[w.file] = hit
    if missing:
        raise ConfigError(missing_message(missing))
    return found


def missing_message(missing: list[tuple[WeightFile, str]]) -> str:
    d = weights_dir()
    items = "; ".join(f"{w.stage} needs {w.file} ({why})" for w, why in missing)
    stages = sorted({w.stage for w, _ in missing})
    return (f"missing model weights: {items}. Looked in the config ({', '.join(w.key for w, _ in missing)}), "
            f"${ENV_DIR}={d if d else '(unset)'} and the library caches. Stage them with "
            f"`curate weights fetch --to DIR` on a machine with internet, copy DIR here and set {ENV_DIR}=DIR "
            f"(or set {stages[0]}.weights=random for a run with random weights, recorded as such)")


def random_weight_stages(files: list[WeightFile]) -> list[str]:
    """Stages whose weights among `files` are randomly initialised (for manifests and ledgers)."""
    return sorted({w.stage for w in files if w.random})


def weights_record(files: list[WeightFile]) -> list[dict[str, Any]]:
    """One entry per weight file: what the run used, for the manifest. Never downloads."""
    out = []
    for w in files:
        entry: dict[str, Any] = {"stage": w.stage, "file": w.file, "random": w.random, "path": None,
                                 "where": RANDOM if w.random else "missing", "sha256": None}
        hit = None if w.random else find(w)
        if hit is not None:
            # Checksums come from a fetch index, or are computed for the small packaged models;
            # hashing a multi-GB checkpoint at every start is not worth it.
            digest = read_index(hit.path.parent).get(hit.path.name, {}).get("sha256")
            if digest is None and hit.where == "package":
                digest = sha256(hit.path)
            entry.update(path=str(hit.path), where=hit.where, sha256=digest)
        out.append(entry)
    return out
