"""Where the shards are: a `shards/manifest.json`, a brace/glob pattern, or a directory.

The manifest is the one the `shard` stage writes:
`{"shards": [{"path": "000000.tar", "samples": N, "bytes": B, "sha256": ...}, ...], ...}` with
`path` relative to the manifest's directory. Local paths, `s3://...` (or any fsspec protocol)
and webdataset's `pipe:` commands all work.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import braceexpand
import fsspec
import webdataset as wds


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int | None  # None when no manifest says; counted from the tar headers when needed


def _has_scheme(url: str) -> bool:
    return "://" in url


def _join(base_dir: str, path: str) -> str:
    if _has_scheme(path) or path.startswith(("pipe:", "/")):
        return path
    if _has_scheme(base_dir):
        return posixpath.join(base_dir, path)
    return os.path.join(base_dir, path)


def read_manifest(url: str) -> list[Shard]:
    with fsspec.open(url, "rt") as f:
        manifest = json.load(f)
    base = url.rsplit("/", 1)[0] if _has_scheme(url) else os.path.dirname(os.path.abspath(url))
    shards = [Shard(_join(base, s["path"]), int(s["samples"])) for s in manifest["shards"]]
    if not shards:
        raise ValueError(f"{url}: the manifest lists no shards")
    return shards


def resolve_shards(data: str) -> list[Shard]:
    """Shards named by a manifest, a directory of .tar files, or a (brace / glob) pattern."""
    if not data:
        raise ValueError("no training data given (--data MANIFEST_OR_PATTERN)")
    if data.endswith(".json"):
        return read_manifest(data)
    if data.startswith("pipe:"):
        return [Shard(url, None) for url in braceexpand.braceexpand(data)]
    if not _has_scheme(data) and os.path.isdir(data):
        if os.path.isfile(os.path.join(data, "manifest.json")):
            return read_manifest(os.path.join(data, "manifest.json"))
        data = os.path.join(data, "*.tar")
    urls: list[str] = []
    for pattern in braceexpand.braceexpand(data):
        if any(c in pattern for c in "*?["):
            fs, _ = fsspec.core.url_to_fs(pattern)
            found = sorted(fs.glob(pattern))
            urls += [fs.unstrip_protocol(p) if _has_scheme(pattern) else p for p in found]
        else:
            urls.append(pattern)
    if not urls:
        raise ValueError(f"{data}: no shards match")
    return [Shard(url, None) for url in urls]


def open_shard(url: str) -> IO[bytes]:
    if url.startswith("pipe:"):
        return wds.gopen(url, "rb")
    if _has_scheme(url) and not url.startswith("file://"):
        return fsspec.open(url, "rb").open()  # s3://, gs://, ... through fsspec
    return open(url.removeprefix("file://"), "rb")


def iter_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one tar, in tar order, read by webdataset's own tar expander and grouper."""
    stream = open_shard(url)
    try:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
        yield from wds.tariterators.group_by_keys(files)
    finally:
        stream.close()


def count_samples(url: str) -> int:
    """Samples in a tar from its member headers (local tars seek past the data)."""
    keys, last = 0, None
    with open_shard(url) as f, tarfile.open(fileobj=f, mode="r:" if f.seekable() else "r|") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, _ = wds.tariterators.base_plus_ext(member.name)
            if key is not None and key != last:
                keys, last = keys + 1, key
    return keys
