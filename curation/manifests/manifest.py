"""WebDataset tar writing, the shard manifest, and `curate manifest verify`.

manifest.json: {"shards": [{"path", "samples", "bytes", "sha256"}], "counts": {...},
"config_hash", "code_version", "fingerprint", "created_at"}; `path` is relative to the
manifest's folder so a dataset can be moved or synced to object storage as a whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa

from curation import __version__
from curation.io import fs
from curation.manifests.store import RunStore

FIXED_MTIME = 1_700_000_000.0  # a constant mtime makes reruns byte-identical


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


def write_tar(batch: pa.Table, out: str, base: str, sources: dict[str, list[str]], meta_cols: list[str],
              quality: int, include_clip: bool) -> pa.Table:
    """Ray task: write one output tar from its slices of input shards."""
    import webdataset as wds

    from curation.imaging import normalized_jpeg
    from curation.segment_io import load_rows

    item = batch.to_pylist()[0]
    slices, records = json.loads(item["slices"]), json.loads(item["records"])
    buf = io.BytesIO()
    samples = 0
    with wds.TarWriter(buf, mtime=FIXED_MTIME) as sink:
        for shard, start, stop in slices:
            rows = load_rows(json.loads(records[shard]), base, sources).slice(start, stop - start)
            for row in rows.to_pylist():
                jpg = normalized_jpeg(row["image"], row.get("format"), row.get("mode"), row.get("orientation"), quality)
                meta = sample_metadata(row, [c for c in meta_cols if c != "clip"])
                repeats = int(row["selected"]) if row.get("selected") is not None else 1
                for r in range(max(1, repeats)):
                    sample = {"__key__": row["id"] if r == 0 else f"{row['id']}_r{r}", "jpg": jpg, "json": meta}
                    if include_clip and row.get("clip") is not None:
                        sample["clip.npy"] = np.asarray(row["clip"], dtype=np.float16)
                    sink.write(sample)
                    samples += 1
    data = buf.getvalue()
    path = f"{item['tar']}.tar"
    fs.write_bytes(fs.join(out, "shards", path), data)
    return pa.Table.from_pylist([{"tar": item["tar"], "path": path, "samples": samples, "bytes": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}])


def write_manifest(store: RunStore, entries: list[dict[str, Any]], cfg: Any, fingerprint: str,
                   stage_names: list[str]) -> dict[str, Any]:
    from curation.manifests.ledger import summarize
    from curation.models.weights import weights_record

    ledger = summarize(store, stage_names)
    manifest = {
        "shards": [{k: e[k] for k in ("path", "samples", "bytes", "sha256")} for e in entries],
        "counts": {"samples": sum(e["samples"] for e in entries), "shards": len(entries),
                   "inputs": ledger["inputs"], "kept": ledger["kept"], "rejects": ledger["rejects"]},
        "config_hash": cfg.hash(),
        "code_version": __version__,
        "fingerprint": fingerprint,
        "created_at": time.time(),
        "random_weights": ledger["random_weights"],  # stages whose scores are meaningless
        "weights": weights_record(cfg),
    }
    fs.write_json(store.uri("shards", "manifest.json"), manifest)
    return manifest


def verify_manifest(manifest_uri: str) -> list[str]:
    """Problems found (empty = verified): missing files, size, sha256, and sample counts read
    back with the real webdataset reader."""
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
        data = fs.read_bytes(uri)
        if len(data) != entry["bytes"]:
            problems.append(f"{entry['path']}: {len(data)} bytes, manifest says {entry['bytes']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 mismatch")
            continue
        keys = [s["__key__"] for s in wds.WebDataset([_local_or_pipe(uri, data)], shardshuffle=False,
                                                     empty_check=False)]
        if len(keys) != entry["samples"] or len(set(keys)) != len(keys):
            problems.append(f"{entry['path']}: {len(keys)} samples read ({len(set(keys))} unique), "
                            f"manifest says {entry['samples']}")
        total += len(keys)
    if total != manifest["counts"]["samples"] and not problems:
        problems.append(f"dataset: {total} samples, manifest says {manifest['counts']['samples']}")
    return problems


def _local_or_pipe(uri: str, data: bytes) -> str:
    """webdataset reads local paths directly; remote tars are verified from the bytes we fetched."""
    if not fs.is_remote(uri):
        return fs.resolve(uri)[1]
    import tempfile

    tmp = tempfile.NamedTemporaryFile(suffix=".tar", delete=False)
    tmp.write(data)
    tmp.close()
    return tmp.name
