"""`ingest`: read an input shard (image files, URL rows, or a WebDataset tar) into rows.

Every item found (directory entry, tar member header, URL row) becomes exactly one row: its bytes,
or a reject reason (symlink, hidden, http_404, blocked_address, timeout, unsafe_member_name, ...).
Nothing is skipped without a row to show for it. The rules for links, hidden names, private
networks and credentials are in io/listing.py, io/address_policy.py and the README.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.config import ConfigError, StageConfig
from curation.io import fs, listing, tars
from curation.io.address_policy import AddressPolicy, check_networks
from curation.io.http import SUPPORTED_SCHEMES, FetchPolicy, fetch, new_session, redact
from curation.io.inputs import plan_shards, read_url_table
from curation.schema import ERROR, ID, INPUT_SHARD, REJECT, REJECT_STAGE, schema_for
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage

COLUMNS = (ID, INPUT_SHARD, "source", "image", "bytes", "content_hash", "caption", REJECT, REJECT_STAGE, ERROR)


@dataclass
class IngestConfig(StageConfig):
    shard_size: int = 1000  # images (or URL rows) per input shard at most; each tar is one shard
    min_shards: int = 8  # small inputs are cut into this many shards (of >= 64 rows) to use every core
    shard_bytes: int = 256 << 20  # a shard of files closes at this many bytes
    url_column: str = "url"
    caption_column: str = "caption"
    download_threads: int = 16
    chunk_rows: int = 128  # a task holds this many rows' bytes at a time (and decodes them together)
    timeout_s: float = 10.0  # connect, and each read
    request_budget_s: float = 30.0  # one URL in all (attempts, redirects, every byte): then `timeout`
    retries: int = 2
    max_bytes: int = 32 * 1024 * 1024  # per file, tar member, URL or object: checked before reading
    max_redirects: int = 5
    max_inflate_ratio: float = 200.0  # a .tar.gz inflating more per compressed byte is a bomb
    max_list_bytes: int = 4 << 30  # a URL list larger than this is refused (split it)
    allowed_schemes: list[str] = field(default_factory=lambda: ["http", "https", "s3"])  # of URL rows
    # Private networks (CIDRs) URL rows may reach, for an internal mirror. Loopback, private,
    # link-local and metadata addresses are refused otherwise; metadata addresses always.
    allow_networks: list[str] = field(default_factory=list)
    follow_symlinks: bool = False  # True: follow links whose target stays inside the input root


@register_stage
class IngestStage(Stage):
    name = "ingest"
    kind = "read"
    produces = ("source", "image", "bytes", "content_hash", "caption")
    rejects = ("hidden", "symlink", "hardlink", "fifo", "socket", "device", "is_a_directory", "outside_input",
               "dangling_symlink", "symlink_loop", "already_listed", "unreadable", "vanished", "too_large",
               "missing_url", "invalid_url", "scheme_not_allowed", "blocked_address", "http_<status>", "timeout",
               "connection_error", "too_many_redirects", "empty_file", "s3_not_found", "s3_access_denied",
               "s3_error", "unsafe_member_name", "corrupt_tar", "decompression_bomb", "no_image_in_sample")
    # One CPU a task: a window of downloads runs ahead of the chunk being decoded inside each
    # task, so the core stays busy without more worker processes (each costs ~3 CPU-s to start
    # and ~300 MB to keep; docs/benchmarks.md).
    resources = Resources(num_cpus=1.0, batch_size=1)
    Config = IngestConfig
    description = "image folders, URL lists (parquet/csv/jsonl) of http(s)/s3 URLs, WebDataset tars; local or s3://"

    def plan(self, input_uri: str) -> list[dict[str, Any]]:
        c = self.params
        return plan_shards(input_uri, c.shard_size, c.url_column, c.follow_symlinks, c.max_list_bytes,
                           c.min_shards, c.shard_bytes)

    def check(self) -> None:
        # A scheme the fetcher cannot read would only turn every such row into scheme_not_allowed.
        unknown = sorted({str(s).lower() for s in self.params.allowed_schemes} - set(SUPPORTED_SCHEMES))
        if unknown:
            raise ConfigError(f"ingest.allowed_schemes: URL rows cannot be fetched over {', '.join(unknown)} "
                              f"(choose from {', '.join(SUPPORTED_SCHEMES)})")
        bad = check_networks(self.params.allow_networks)
        if bad is not None:
            raise ConfigError(f"ingest.allow_networks: {bad!r} is not a network (write a CIDR like 10.1.0.0/16)")

    def policy(self) -> FetchPolicy:
        c = self.params
        return FetchPolicy(timeout_s=c.timeout_s, budget_s=c.request_budget_s, retries=c.retries,
                           max_bytes=c.max_bytes, max_redirects=c.max_redirects,
                           allowed_schemes=tuple(str(s).lower() for s in c.allowed_schemes),
                           addresses=AddressPolicy(tuple(str(n) for n in c.allow_networks)))

    def read_shard(self, spec: dict[str, Any]) -> pa.Table:
        """The whole shard as one table (the runner streams it in chunks instead)."""
        return pa.concat_tables(list(self.iter_chunks(spec)))

    def iter_chunks(self, spec: dict[str, Any], rows_per_chunk: int = 128) -> Iterator[pa.Table]:
        """The shard's rows, `rows_per_chunk` at a time (at least one table, maybe empty), so a
        task holds a chunk of images, not a shard of them."""
        shard, rows, i = spec["shard"], _empty_rows(), 0
        for source, data, caption, reject, error in self._iter_items(spec):
            rows[ID].append(f"{shard}-{i:06d}")
            rows[INPUT_SHARD].append(shard)
            rows["source"].append(source)
            rows["image"].append(data)
            rows["bytes"].append(len(data) if data is not None else None)
            rows["content_hash"].append(hashlib.sha1(data).hexdigest() if data is not None else None)
            rows["caption"].append(caption)
            rows[REJECT].append(reject)
            rows[REJECT_STAGE].append(self.name if reject else None)
            rows[ERROR].append(error)
            i += 1
            if len(rows[ID]) >= rows_per_chunk:
                yield pa.table(rows, schema=schema_for(COLUMNS))
                rows = _empty_rows()
        if rows[ID] or i == 0:
            yield pa.table(rows, schema=schema_for(COLUMNS))

    def _iter_items(self, spec: dict[str, Any]) -> Iterator[tuple]:
        if spec["kind"] == "files":
            # "uris": plans written before listing recorded its rejects
            listed = spec.get("items") or [[u, None, None] for u in spec["uris"]]
            return (self._read_file(*item) for item in listed)
        if spec["kind"] == "urls":
            return self._iter_urls(spec)
        return self._iter_tar(spec["uri"], spec.get("path"))

    def _read_file(self, source: str, reject: str | None, read_path: str | None) -> tuple:
        if reject is not None:  # found while listing: no byte of it is read
            return source, None, None, reject, None
        if not fs.is_remote(source):
            data, reason = listing.read_local_capped(read_path or source, self.params.max_bytes)
            return source, data, None, reason, None
        try:
            size = fs.file_size(source)
            if size is not None and size > self.params.max_bytes:
                return source, None, None, "too_large", None
            with fs.open_stream(source) as f:
                data, reason = fs.read_stream_capped(f, self.params.max_bytes)
        except OSError as exc:
            return source, None, None, "unreadable", str(exc)[:300]
        return source, data, None, reason, None

    def _iter_urls(self, spec: dict[str, Any]) -> Iterator[tuple]:
        table = read_url_table(spec["uri"], self.params.url_column, self.params.max_list_bytes, spec.get("path"))
        table = table.slice(spec["start"], spec["stop"] - spec["start"])
        urls = [str(u) if u is not None else "" for u in table.column(self.params.url_column).to_pylist()]
        caps = (table.column(self.params.caption_column).to_pylist()
                if self.params.caption_column in table.column_names else [None] * len(urls))
        policy, threads = self.policy(), self.params.download_threads
        # A window of downloads runs ahead of the row being yielded: the next chunk downloads while
        # this one is decoded, and no more than the window is held in memory.
        window = max(2 * threads, 128)
        with new_session(policy, threads) as session, ThreadPoolExecutor(threads) as pool:
            pending: deque = deque()
            for k, url in enumerate(urls):
                pending.append(pool.submit(fetch, session, url, policy))
                if k >= window:
                    yield self._url_row(urls, caps, k - window, pending.popleft().result())
            first = len(urls) - len(pending)
            for j, future in enumerate(pending):
                yield self._url_row(urls, caps, first + j, future.result())

    @staticmethod
    def _url_row(urls: list[str], caps: list, k: int, result: tuple) -> tuple:
        data, reason = result
        # Userinfo (user:secret@) is used for the request and never stored: source is redacted.
        return redact(urls[k]), data, None if caps[k] is None else str(caps[k]), reason, None

    def _iter_tar(self, uri: str, path: str | None = None) -> Iterator[tuple]:
        for s in tars.iter_samples(uri, self.params.max_bytes, self.params.max_inflate_ratio, path):
            source = f"{uri}#{s.key}"
            data = tars.image_member(s) if s.reject is None else None
            reject = s.reject or (None if data is not None else "no_image_in_sample")
            yield source, data, tars.caption_member(s), reject, s.error


def _empty_rows() -> dict[str, list]:
    return {c: [] for c in COLUMNS}
