"""`ingest`: read an input shard (image files, URL rows, or a WebDataset tar) into rows.

Every input item becomes exactly one row: fetched bytes, or a reject reason (http_404, s3_not_found,
timeout, scheme_not_allowed, unsafe_member_name, ...). Nothing is skipped without a row to show for it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.config import ConfigError, StageConfig
from curation.io import fs, tars
from curation.io.http import SUPPORTED_SCHEMES, FetchPolicy, fetch
from curation.io.inputs import plan_shards, read_url_table
from curation.schema import ERROR, ID, INPUT_SHARD, REJECT, REJECT_STAGE, schema_for
from curation.stages.base import Resources, Stage
from curation.stages.registry import register_stage

COLUMNS = (ID, INPUT_SHARD, "source", "image", "bytes", "content_hash", "caption", REJECT, REJECT_STAGE, ERROR)


@dataclass
class IngestConfig(StageConfig):
    shard_size: int = 1000  # images (or URL rows) per input shard; each tar is one shard
    url_column: str = "url"
    caption_column: str = "caption"
    download_threads: int = 16
    timeout_s: float = 10.0
    retries: int = 2
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    allowed_schemes: list[str] = field(default_factory=lambda: ["http", "https", "s3"])  # of URL rows


@register_stage
class IngestStage(Stage):
    name = "ingest"
    kind = "read"
    order = 0
    produces = ("source", "image", "bytes", "content_hash", "caption")
    rejects = ("fetch: http_<status>/timeout/too_large/...", "s3_not_found", "s3_access_denied", "s3_error",
               "scheme_not_allowed", "invalid_url", "unsafe_member_name", "corrupt_tar", "no_image_in_sample",
               "unreadable")
    resources = Resources(num_cpus=1.0, batch_size=1)
    Config = IngestConfig
    description = "image folders, URL lists (parquet/csv/jsonl) of http(s)/s3 URLs, WebDataset tars; local or s3://"

    def plan(self, input_uri: str) -> list[dict[str, Any]]:
        return plan_shards(input_uri, self.cfg.shard_size, self.cfg.url_column)

    def check(self) -> None:
        # A scheme the fetcher cannot read would only turn every such row into scheme_not_allowed.
        unknown = sorted({str(s).lower() for s in self.cfg.allowed_schemes} - set(SUPPORTED_SCHEMES))
        if unknown:
            raise ConfigError(f"ingest.allowed_schemes: URL rows cannot be fetched over {', '.join(unknown)} "
                              f"(choose from {', '.join(SUPPORTED_SCHEMES)})")

    def policy(self) -> FetchPolicy:
        c = self.cfg
        return FetchPolicy(timeout_s=c.timeout_s, retries=c.retries, max_bytes=c.max_bytes,
                           max_redirects=c.max_redirects,
                           allowed_schemes=tuple(str(s).lower() for s in c.allowed_schemes))

    def read_shard(self, spec: dict[str, Any]) -> pa.Table:
        shard = spec["shard"]
        if spec["kind"] == "files":
            items = [self._read_file(uri) for uri in spec["uris"]]
        elif spec["kind"] == "urls":
            items = self._read_urls(spec)
        else:
            items = self._read_tar(spec["uri"])
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

    def _read_file(self, uri: str) -> tuple:
        try:
            data = fs.read_bytes(uri)
        except OSError as exc:
            return uri, None, None, "unreadable", str(exc)[:300]
        if len(data) > self.cfg.max_bytes:
            return uri, None, None, "too_large", None
        return uri, data, None, None, None

    def _read_urls(self, spec: dict[str, Any]) -> list[tuple]:
        table = read_url_table(spec["uri"], self.cfg.url_column).slice(spec["start"], spec["stop"] - spec["start"])
        urls = [str(u) if u is not None else "" for u in table.column(self.cfg.url_column).to_pylist()]
        caps = (table.column(self.cfg.caption_column).to_pylist()
                if self.cfg.caption_column in table.column_names else [None] * len(urls))
        policy = self.policy()
        import requests

        with requests.Session() as session, ThreadPoolExecutor(self.cfg.download_threads) as pool:
            results = list(pool.map(lambda u: fetch(session, u, policy), urls))
        return [(u, data, None if c is None else str(c), reason, None)
                for u, c, (data, reason) in zip(urls, caps, results)]

    def _read_tar(self, uri: str) -> list[tuple]:
        out = []
        for s in tars.iter_samples(uri, self.cfg.max_bytes):
            source = f"{uri}#{s.key}"
            data = tars.image_member(s) if s.reject is None else None
            reject = s.reject or (None if data is not None else "no_image_in_sample")
            out.append((source, data, tars.caption_member(s), reject, s.error))
        return out
