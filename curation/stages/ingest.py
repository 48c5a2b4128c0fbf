"""`ingest`: read an input shard (image files, URL rows, or a WebDataset tar) into rows.

Every item found (directory entry, tar member header, URL row) becomes exactly one row: its bytes,
or a reject reason (symlink, hidden, http_404, blocked_address, timeout, unsafe_member_name, ...).
Nothing is skipped without a row to show for it. The rules for links, hidden names, private
networks and credentials are in io/listing.py, io/address_policy.py and the README.
"""

from __future__ import annotations

import hashlib
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
    order = 0
    produces = ("source", "image", "bytes", "content_hash", "caption")
    rejects = ("hidden", "symlink", "hardlink", "fifo", "socket", "device", "is_a_directory", "outside_input",
               "dangling_symlink", "symlink_loop", "already_listed", "unreadable", "vanished", "too_large",
               "missing_url", "invalid_url", "scheme_not_allowed", "blocked_address", "http_<status>", "timeout",
               "connection_error", "too_many_redirects", "empty_file", "s3_not_found", "s3_access_denied",
               "s3_error", "unsafe_member_name", "corrupt_tar", "decompression_bomb", "no_image_in_sample")
    # Half a CPU: a URL shard waits on the network most of the time, so two tasks share a core
    # (one downloading while the other decodes).
    resources = Resources(num_cpus=0.5, batch_size=1)
    Config = IngestConfig
    description = "image folders, URL lists (parquet/csv/jsonl) of http(s)/s3 URLs, WebDataset tars; local or s3://"

    def plan(self, input_uri: str) -> list[dict[str, Any]]:
        c = self.cfg
        return plan_shards(input_uri, c.shard_size, c.url_column, c.follow_symlinks, c.max_list_bytes,
                           c.min_shards, c.shard_bytes)

    def check(self) -> None:
        # A scheme the fetcher cannot read would only turn every such row into scheme_not_allowed.
        unknown = sorted({str(s).lower() for s in self.cfg.allowed_schemes} - set(SUPPORTED_SCHEMES))
        if unknown:
            raise ConfigError(f"ingest.allowed_schemes: URL rows cannot be fetched over {', '.join(unknown)} "
                              f"(choose from {', '.join(SUPPORTED_SCHEMES)})")
        bad = check_networks(self.cfg.allow_networks)
        if bad is not None:
            raise ConfigError(f"ingest.allow_networks: {bad!r} is not a network (write a CIDR like 10.1.0.0/16)")

    def policy(self) -> FetchPolicy:
        c = self.cfg
        return FetchPolicy(timeout_s=c.timeout_s, budget_s=c.request_budget_s, retries=c.retries,
                           max_bytes=c.max_bytes, max_redirects=c.max_redirects,
                           allowed_schemes=tuple(str(s).lower() for s in c.allowed_schemes),
                           addresses=AddressPolicy(tuple(str(n) for n in c.allow_networks)))

    def read_shard(self, spec: dict[str, Any]) -> pa.Table:
        shard = spec["shard"]
        if spec["kind"] == "files":
            # "uris": plans written before listing recorded its rejects
            listed = spec.get("items") or [[u, None, None] for u in spec["uris"]]
            items = [self._read_file(*item) for item in listed]
        elif spec["kind"] == "urls":
            items = self._read_urls(spec)
        else:
            items = self._read_tar(spec["uri"], spec.get("path"))
        rows: dict[str, list] = {c: [] for c in COLUMNS}
        for i, (source, data, caption, reject, error) in enumerate(items):
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
        return pa.table(rows, schema=schema_for(COLUMNS))

    def _read_file(self, source: str, reject: str | None, read_path: str | None) -> tuple:
        if reject is not None:  # found while listing: no byte of it is read
            return source, None, None, reject, None
        if not fs.is_remote(source):
            data, reason = listing.read_local_capped(read_path or source, self.cfg.max_bytes)
            return source, data, None, reason, None
        try:
            size = fs.file_size(source)
            if size is not None and size > self.cfg.max_bytes:
                return source, None, None, "too_large", None
            with fs.open_stream(source) as f:
                data, reason = fs.read_stream_capped(f, self.cfg.max_bytes)
        except OSError as exc:
            return source, None, None, "unreadable", str(exc)[:300]
        return source, data, None, reason, None

    def _read_urls(self, spec: dict[str, Any]) -> list[tuple]:
        table = read_url_table(spec["uri"], self.cfg.url_column, self.cfg.max_list_bytes, spec.get("path"))
        table = table.slice(spec["start"], spec["stop"] - spec["start"])
        urls = [str(u) if u is not None else "" for u in table.column(self.cfg.url_column).to_pylist()]
        caps = (table.column(self.cfg.caption_column).to_pylist()
                if self.cfg.caption_column in table.column_names else [None] * len(urls))
        policy = self.policy()
        with new_session(policy, self.cfg.download_threads) as session, ThreadPoolExecutor(self.cfg.download_threads) as pool:
            results = list(pool.map(lambda u: fetch(session, u, policy), urls))
        # Userinfo (user:secret@) is used for the request and never stored: source is redacted.
        return [(redact(u), data, None if c is None else str(c), reason, None)
                for u, c, (data, reason) in zip(urls, caps, results)]

    def _read_tar(self, uri: str, path: str | None = None) -> list[tuple]:
        out = []
        for s in tars.iter_samples(uri, self.cfg.max_bytes, self.cfg.max_inflate_ratio, path):
            source = f"{uri}#{s.key}"
            data = tars.image_member(s) if s.reject is None else None
            reject = s.reject or (None if data is not None else "no_image_in_sample")
            out.append((source, data, tars.caption_member(s), reject, s.error))
        return out
