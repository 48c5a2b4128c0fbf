"""Turn an input (image folder, URL list, WebDataset tars; local or s3://) into input shards.

An input shard is the unit of work, of resume and of accounting. Its id is stable across reruns
because the listing is sorted and the plan is saved in the run folder on first use.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.io import fs, listing, names
from curation.io.errors import InputError

URL_LIST_EXTS = listing.URL_LIST_EXTS


def plan_shards(input_uri: str, shard_size: int, url_column: str, follow_symlinks: bool = False,
                max_list_bytes: int = 4 << 30, min_shards: int = 8,
                shard_bytes: int = 256 << 20) -> list[dict[str, Any]]:
    """Input shards covering every item found: tars (one shard each), URL-list row ranges, and
    groups of files, where a file shard also carries the items rejected while listing (links,
    devices, hidden names ...) so that each of them gets its row.

    Rows per shard: `shard_size`, but small inputs are cut into at least `min_shards` shards (of
    64 rows or more), so every core of a small machine has work and one task's downloads
    overlap another's decoding; file shards also close at `shard_bytes`, so a task's memory is
    bounded by bytes, not only by count."""
    try:
        if not fs.exists(input_uri):
            raise InputError(f"input not found: {input_uri}")
        single = fs.is_file(input_uri)
    except OSError as exc:
        raise InputError(f"cannot reach {input_uri}: {_first_line(exc)}") from None
    if single:
        kind = listing.kind_of(input_uri)
        if kind == "image":
            raise InputError(f"{input_uri}: a single input file must be a URL list "
                             f"({', '.join(listing.URL_LIST_EXTS)}) or a tar (.tar, .tar.gz, .tgz)")
        # Named by the user, so a link is followed here (and only here).
        real = None if fs.is_remote(input_uri) else names.escape(os.path.realpath(os.fsencode(input_uri)))
        items = [listing.Item(input_uri, kind, None, real)]
    else:
        items = listing.list_input(input_uri, follow_symlinks)
    if not items:
        raise InputError(f"input is empty: {input_uri}")
    specs: list[dict[str, Any]] = []
    tars = [i for i in items if i.kind == "tar" and i.reject is None]
    for n, item in enumerate(tars):
        specs.append({"shard": f"tar-{n:05d}", "kind": "tar", "uri": item.source,
                      **({"path": item.read_path} if item.read_path else {})})
    n = 0
    for item in (i for i in items if i.kind == "urls" and i.reject is None):
        rows = read_url_table(item.source, url_column, max_list_bytes, item.read_path).num_rows
        per = _rows_per_shard(rows, shard_size, min_shards)
        for start in range(0, rows, per):
            specs.append({"shard": f"url-{n:05d}", "kind": "urls", "uri": item.source,
                          "start": start, "stop": min(rows, start + per),
                          **({"path": item.read_path} if item.read_path else {})})
            n += 1
    files = [i for i in items if i.kind == "image" or i.reject is not None]
    per = _rows_per_shard(len(files), shard_size, min_shards)
    group: list[list] = []
    size = 0
    for item in files:
        if group and (len(group) >= per or size + item.size > shard_bytes):
            specs.append({"shard": f"img-{sum(s['kind'] == 'files' for s in specs):05d}", "kind": "files",
                          "items": group})
            group, size = [], 0
        group.append([item.source, item.reject, item.read_path])
        size += item.size
    if group:
        specs.append({"shard": f"img-{sum(s['kind'] == 'files' for s in specs):05d}", "kind": "files",
                      "items": group})
    return specs


def _rows_per_shard(rows: int, shard_size: int, min_shards: int) -> int:
    return max(1, min(shard_size, max(64, -(-rows // max(1, min_shards)))))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def read_url_table(uri: str, url_column: str, max_bytes: int = 4 << 30, path: str | None = None) -> pa.Table:
    """The whole URL list (read from `path` when a followed link put it elsewhere); a list that
    cannot be parsed is the user's one-line error."""
    source = _list_source(path or uri, max_bytes)
    try:
        if uri.lower().endswith(".parquet"):
            table = pq.read_table(io.BytesIO(source))
        elif uri.lower().endswith((".jsonl", ".json")):
            table = pajson.read_json(io.BytesIO(source))
        else:
            delimiter = "\t" if uri.lower().endswith(".tsv") else ","
            table = pacsv.read_csv(io.BytesIO(source), parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                   convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except (pa.ArrowException, ValueError) as exc:
        raise InputError(f"{uri}: not a readable URL list: {_first_line(exc)}") from None
    if url_column not in table.column_names:
        raise InputError(f"{uri}: no {url_column!r} column (columns: {', '.join(table.column_names)})")
    return table


def _list_source(uri: str, max_bytes: int) -> bytes:
    """A listed URL list's bytes: a local one opened without following links (its path may be
    escaped), a remote one through pyarrow; never decompressed by name."""
    if fs.is_remote(uri):
        size = fs.file_size(uri) or 0
        data, reason = (None, "too_large") if size > max_bytes else (fs.read_bytes(uri), None)
    else:
        data, reason = listing.read_local_capped(uri, max_bytes)
    if reason == "too_large":
        raise InputError(f"{uri}: URL list is over ingest.max_list_bytes ({max_bytes} bytes); split it")
    if data is None:
        raise InputError(f"{uri}: URL list cannot be read ({reason})")
    return data
