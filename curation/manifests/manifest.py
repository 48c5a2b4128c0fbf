"""WebDataset tar writing, the shard manifest, and `curate manifest verify`.

manifest.json: {"shards": [{"path", "samples", "bytes", "sha256"}], "counts": {...},
"config_hash", "code_version", "fingerprint", "created_at"}; `path` is relative to the
manifest's folder so a dataset can be moved or synced to object storage as a whole.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from curation import __version__
from curation.io import fs


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def sample_metadata(row: dict[str, Any], meta_cols: list[str]) -> dict[str, Any]:
    return {c: _jsonable(row.get(c)) for c in ["id", "input_shard", *meta_cols] if c in row}


def write_manifest(uri: str, entries: list[dict[str, Any]], config_hash: str, fingerprint: str,
                   ledger: dict[str, Any], weights: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest: every tar with its size and sha256, the run's counts (from its ledger
    summary), and what produced it (config hash, code version, the weights each stage used)."""
    manifest = {
        "shards": [{k: e[k] for k in ("path", "samples", "bytes", "sha256")} for e in entries],
        "counts": {"samples": sum(e["samples"] for e in entries), "shards": len(entries),
                   "inputs": ledger["inputs"], "kept": ledger["kept"], "rejects": ledger["rejects"]},
        "config_hash": config_hash,
        "code_version": __version__,
        "fingerprint": fingerprint,
        "created_at": time.time(),
        "random_weights": ledger["random_weights"],  # stages whose scores are meaningless
        "weights": weights,
    }
    fs.write_json(uri, manifest)
    return manifest


def verify_manifest(manifest_uri: str) -> list[str]:
    """Problems found (empty = verified): missing files, size, sha256, and sample counts read
    back with the real webdataset reader. Shards are hashed in chunks, never held whole."""
    import webdataset as wds

    problems = []
    manifest = fs.read_json(manifest_uri)
    root = manifest_uri.rsplit("/", 1)[0] if "/" in manifest_uri else "."
    total = 0
    for entry in manifest["shards"]:
        uri = fs.join(root, entry["path"])
        if not fs.exists(uri):
            problems.append(f"{entry['path']}: missing")
            continue
        with _local_copy(uri) as (local, size, sha256):
            if size != entry["bytes"]:
                problems.append(f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}")
            if sha256 != entry["sha256"]:
                problems.append(f"{entry['path']}: sha256 mismatch")
                continue
            keys = [s["__key__"] for s in wds.WebDataset([local], shardshuffle=False, empty_check=False)]
        if len(keys) != entry["samples"] or len(set(keys)) != len(keys):
            problems.append(f"{entry['path']}: {len(keys)} samples read ({len(set(keys))} unique), "
                            f"manifest says {entry['samples']}")
        total += len(keys)
    if total != manifest["counts"]["samples"] and not problems:
        problems.append(f"dataset: {total} samples, manifest says {manifest['counts']['samples']}")
    return problems


@contextmanager
def _local_copy(uri: str, chunk: int = 8 << 20) -> Iterator[tuple[str, int, str]]:
    """(local path, size, sha256) of a shard. webdataset reads local paths directly; a remote
    tar is downloaded once to a temp file (removed after) while it is hashed."""
    import tempfile

    f, path = fs.resolve(uri)
    sha, size = hashlib.sha256(), 0
    with tempfile.TemporaryDirectory(prefix="curate-verify-") as tmpdir:
        local = os.path.join(tmpdir, "shard.tar") if fs.is_remote(uri) else path
        with f.open_input_stream(path) as src, (open(local, "wb") if local != path else nullcontext()) as dst:
            while block := src.read(chunk):
                sha.update(block)
                size += len(block)
                if dst is not None:
                    dst.write(block)
        yield local, size, sha.hexdigest()
