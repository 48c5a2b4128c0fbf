"""One filesystem API for local paths and `s3://` URIs (pyarrow.fs).

S3 endpoint and credentials come from the usual AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...) or from URI query options (`?endpoint_override=...&scheme=http`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs

from curation.io.errors import InputError

ALLOWED_SCHEMES = ("file", "s3")


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


@lru_cache(maxsize=64)
def _resolve(uri: str, env: tuple) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    scheme = uri.split("://", 1)[0]
    if scheme not in ALLOWED_SCHEMES:
        raise InputError(f"unsupported storage scheme {scheme}:// for {uri} (use a local path or s3://; "
                         f"a list of http(s) URLs goes in a .parquet/.csv/.tsv/.jsonl file)")
    if scheme == "s3" and os.environ.get("AWS_ENDPOINT_URL") and "endpoint_override" not in uri:
        return pafs.S3FileSystem(**_endpoint_options()), uri.split("://", 1)[1].split("?", 1)[0]
    return pafs.FileSystem.from_uri(uri)


def _endpoint_options() -> dict[str, str]:
    """S3FileSystem options for a custom endpoint from AWS_ENDPOINT_URL (MinIO, moto, Ceph ...)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    return {"endpoint_override": endpoint.split("://", 1)[-1],
            "scheme": endpoint.split("://", 1)[0] if "://" in endpoint else "https",
            "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}


@lru_cache(maxsize=16)
def _bucket_region(bucket: str) -> str | None:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:  # no such bucket, no network: let the request itself fail with its own error
        return None


def s3_for_urls(bucket: str, timeout_s: float, attempts: int) -> pafs.S3FileSystem:
    """The filesystem `s3://` URL rows are fetched through.

    Endpoint and credentials come only from the environment, never from the row: an input list
    must not be able to point ingest at another endpoint (so URL rows take no `?query` options).
    `attempts` bounds the SDK's own retries (with its backoff). On Linux pyarrow ignores
    `request_timeout`; a stalled read is then cut by the SDK's low-speed limit (about 3 s)."""
    return _s3_for_urls(bucket, timeout_s, attempts, _endpoint_env())


@lru_cache(maxsize=64)
def _s3_for_urls(bucket: str, timeout_s: float, attempts: int, env: tuple) -> pafs.S3FileSystem:
    if env[0]:
        opts: dict[str, Any] = _endpoint_options()
    else:  # AWS itself: a bucket answers only in its own region, as FileSystem.from_uri knows
        region = _bucket_region(bucket)
        opts = {"region": region} if region else {}
    return pafs.S3FileSystem(connect_timeout=timeout_s, request_timeout=timeout_s,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **opts)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    # Keyed on the endpoint variables too: a process that changes them (a test starting its own
    # server) must not get a filesystem bound to the old endpoint.
    return _resolve(uri.rstrip("/") if len(uri) > 1 else uri, _endpoint_env())


def _endpoint_env() -> tuple:
    return tuple(os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def is_file(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    # compression=None: pyarrow would otherwise inflate any *.gz/*.bz2/*.zst by its name alone.
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()


def open_stream(uri: str) -> Any:
    """A raw binary input stream: never decompressed by the file's name."""
    fs, path = resolve(uri)
    return fs.open_input_stream(path, compression=None)


def file_size(uri: str) -> int | None:
    fs, path = resolve(uri)
    return fs.get_file_info(path).size


def read_stream_capped(stream: Any, max_bytes: int, deadline: float | None = None,
                       chunk: int = 1 << 20) -> tuple[bytes | None, str | None]:
    """At most `max_bytes` from a stream: (bytes, None), or (None, too_large / timeout)."""
    import time

    chunks, total = [], 0
    while data := stream.read(chunk):
        total += len(data)
        if total > max_bytes:
            return None, "too_large"
        if deadline is not None and time.monotonic() > deadline:
            return None, "timeout"
        chunks.append(data)
    return b"".join(chunks), None


@contextmanager
def atomic_output(uri: str) -> Iterator[Any]:
    """A binary stream that appears under `uri` whole or not at all: a crash never leaves a
    half file under the final name. Local: a temp file, fsync, rename. S3: a (multipart) upload
    only becomes an object when it completes, so a killed writer leaves nothing; pyarrow has no
    abort, so on an exception the upload is completed and deleted at once (a reader listing the
    prefix at that moment could see it; the manifest and completion records never name it).
    Streams, so a caller writing a 1 GB shard holds one buffer, not the shard."""
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    f = fs.open_output_stream(path, compression=None)
    try:
        yield f
    except BaseException:
        with suppress(OSError):  # the caller's error is the one to see
            f.close()
            fs.delete_file(path)
        raise
    f.close()


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_output(uri) as f:
        f.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())


def list_files(uri: str, recursive: bool = False) -> list[str]:
    """Files under a directory, as URIs (or paths) in the caller's form, sorted."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    prefix = uri.rstrip("/")
    out = [prefix + "/" + i.path[len(path):].lstrip("/") for i in infos if i.type == pafs.FileType.File]
    return sorted(out)


def delete_dir(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)
