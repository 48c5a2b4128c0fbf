"""Reusable intermediate results of the global stages, under `ctx.cache_uri`, through pyarrow.fs
(local paths in tests, `s3://` on a cluster).

An entry is a directory (Parquet parts written by Ray Data, or small npz/json files) plus a
`<name>.done` marker written last, so a crash mid-write never leaves a half entry that a rerun
would trust. Entries are named by a key that hashes everything their content depends on
(`ctx.input_fingerprint` and the parameters used); a stage keeps one entry per name prefix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import numpy as np
import pyarrow.fs as pafs


def cache_key(*parts: Any) -> str:
    blob = json.dumps([str(p) if not isinstance(p, (int, float, str, list, dict)) else p
                       for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a URI or a local path (relative paths are made absolute)."""
    if "://" not in uri:
        uri = os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *names: str) -> str:
    return "/".join([uri.rstrip("/"), *names])


def is_done(uri: str) -> bool:
    fs, path = resolve(uri + ".done")
    return fs.get_file_info(path).type == pafs.FileType.File


def mark_done(uri: str) -> None:
    write_bytes(uri + ".done", b"ok\n")


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def save_arrays(uri: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """An npz of arrays (+ json meta) as one entry, marked done."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(join(uri, "arrays.npz"), buf.getvalue())
    write_bytes(join(uri, "meta.json"), json.dumps(meta or {}, indent=1).encode())
    mark_done(uri)


def load_arrays(uri: str) -> dict[str, np.ndarray] | None:
    """The entry's arrays, or None when it is absent or unfinished."""
    if not is_done(uri):
        return None
    with np.load(io.BytesIO(read_bytes(join(uri, "arrays.npz")))) as z:
        return {k: z[k] for k in z.files}


def prune(cache_uri: str, prefix: str, keep: str) -> None:
    """Delete this stage's other entries named `prefix*` (a changed input makes them dead weight:
    the cache holds one entry per prefix, not a history)."""
    fs, root = resolve(cache_uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return
    for info in fs.get_file_info(pafs.FileSelector(root)):
        name = info.base_name
        if name.startswith(prefix) and name not in (keep, keep + ".done"):
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)
