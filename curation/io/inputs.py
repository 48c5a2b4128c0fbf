"""Turn an input (image folder, URL list, WebDataset tars; local or s3://) into input shards.

An input shard is the unit of work, of resume and of accounting. Its id is stable across reruns
because the listing is sorted and the plan is saved in the run folder on first use.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.io import fs

URL_LIST_EXTS = (".parquet", ".csv", ".jsonl", ".json", ".tsv")


class InputError(ValueError):
    """The input cannot be read at all (missing, empty, wrong kind); one line for the user."""


def plan_shards(input_uri: str, shard_size: int, url_column: str) -> list[dict[str, Any]]:
    if not fs.exists(input_uri):
        raise InputError(f"input not found: {input_uri}")
    if fs.is_file(input_uri):
        files = [input_uri]
    else:
        files = [u for u in fs.list_files(input_uri, recursive=True) if not _hidden(u)]
    tars = [u for u in files if u.endswith(".tar")]
    lists = [u for u in files if u.endswith(URL_LIST_EXTS)]
    images = [u for u in files if u not in tars and u not in lists]
    if fs.is_file(input_uri) and not tars and not lists:
        raise InputError(f"{input_uri}: a single input file must be a URL list ({', '.join(URL_LIST_EXTS)}) or a .tar")
    if not files:
        raise InputError(f"input is empty: {input_uri}")
    specs: list[dict[str, Any]] = []
    for i, uri in enumerate(tars):
        specs.append({"shard": f"tar-{i:05d}", "kind": "tar", "uri": uri})
    n = 0
    for uri in lists:
        rows = read_url_table(uri, url_column).num_rows
        for start in range(0, rows, shard_size):
            specs.append({"shard": f"url-{n:05d}", "kind": "urls", "uri": uri, "start": start,
                          "stop": min(rows, start + shard_size)})
            n += 1
    for j, start in enumerate(range(0, len(images), shard_size)):
        specs.append({"shard": f"img-{j:05d}", "kind": "files", "uris": images[start:start + shard_size]})
    return specs


def _hidden(uri: str) -> bool:
    return any(part.startswith(".") for part in uri.split("/")[-1:])


def read_url_table(uri: str, url_column: str) -> pa.Table:
    data = fs.read_bytes(uri)
    if uri.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
    elif uri.endswith((".jsonl", ".json")):
        table = pajson.read_json(io.BytesIO(data))
    else:
        delimiter = "\t" if uri.endswith(".tsv") else ","
        table = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(delimiter=delimiter),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    if url_column not in table.column_names:
        raise InputError(f"{uri}: no {url_column!r} column (columns: {', '.join(table.column_names)})")
    return table
