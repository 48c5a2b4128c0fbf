"""Fetch one `s3://bucket/key` URL row through pyarrow.fs, with the same caps as an http fetch.

Like `http.fetch`, every failure is a reason string, never an exception: a missing object is
`s3_not_found`, a refused one `s3_access_denied`, an object over the cap `too_large` (known from
its size before a byte is read), a stalled endpoint `timeout`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from curation.io import fs

if TYPE_CHECKING:
    from curation.io.fetch_policy import FetchPolicy

CHUNK = 1 << 20


def fetch_s3(url: str, policy: FetchPolicy) -> tuple[bytes | None, str | None]:
    """(bytes, None) on success, (None, reason) on failure."""
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    # A query would be read as filesystem options (endpoint, credentials) by pyarrow's URI parser;
    # rows are data, so they cannot carry any. A key that really holds '?' or '#' is not reachable.
    if not bucket or not key or parts.query or parts.fragment or key.endswith("/"):
        return None, "invalid_url"
    path = f"{bucket}/{key}"
    try:
        s3 = fs.s3_for_urls(bucket, policy.timeout_s, policy.retries + 1)
        info = s3.get_file_info(path)
        if info.type != pafs.FileType.File:  # no object (a "directory" is only a key prefix)
            return None, "s3_not_found"
        if info.size is not None and info.size > policy.max_bytes:
            return None, "too_large"
        with s3.open_input_stream(path, compression=None) as f:
            # A size past the cap means the object grew after its size was read; a stalled
            # endpoint trickling bytes ends at the URL's budget.
            data, reason = fs.read_stream_capped(f, policy.max_bytes, time.monotonic() + policy.budget_s, CHUNK)
    except OSError as exc:
        return None, error_reason(exc)
    if reason:
        return None, reason
    return (data, None) if data else (None, "empty_file")


def error_reason(exc: OSError) -> str:
    """A reject reason from pyarrow's S3 error text ("AWS Error ACCESS_DENIED during ...",
    "... curlCode: 28, Timeout was reached"); pyarrow raises plain OSError for all of them."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in text or "NO_SUCH_BUCKET" in text:
        return "s3_not_found"
    if "ACCESS_DENIED" in text or "HTTP response code: 403" in text:
        return "s3_access_denied"
    if "curlCode: 28" in text or "Timeout was reached" in text:
        return "timeout"
    if "curlCode:" in text or "NETWORK_CONNECTION" in text:
        return "connection_error"
    return "s3_error"
