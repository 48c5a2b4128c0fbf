"""Fetch one URL for ingest: allow-listed schemes, timeouts, retries, size and redirect caps.
http(s) here; `s3://` rows go through pyarrow.fs (s3fetch.py) under the same policy.

Every failure is returned as a reason string (recorded as the row's reject), never raised.
img2dataset does the same job but as a whole tool with its own output format; we need its
per-URL core inside our read tasks, so this is a small requests-based version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# What fetch() can read at all; `allowed_schemes` picks among these (file://, ftp:// ... never).
SUPPORTED_SCHEMES = ("http", "https", "s3")


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    allowed_schemes: tuple[str, ...] = SUPPORTED_SCHEMES
    allowed_content_types: tuple[str, ...] = ("image/", "application/octet-stream", "binary/octet-stream")
    user_agent: str = "curation/0.1 (+https://github.com/curation; research dataset builder)"


def scheme_reason(url: str, policy: FetchPolicy) -> str | None:
    scheme = urlsplit(url).scheme.lower()
    return None if scheme in policy.allowed_schemes and scheme in SUPPORTED_SCHEMES else "scheme_not_allowed"


def fetch(session: requests.Session, url: str, policy: FetchPolicy) -> tuple[bytes | None, str | None]:
    """(bytes, None) on success, (None, reason) on failure."""
    if not isinstance(url, str) or not url.strip():
        return None, "missing_url"
    reason = scheme_reason(url, policy)
    if reason:
        return None, reason
    if urlsplit(url).scheme.lower() == "s3":
        from curation.io.s3fetch import fetch_s3

        return fetch_s3(url, policy)  # the SDK retries with its own backoff, `retries` times at most
    last = "connection_error"
    for attempt in range(policy.retries + 1):
        if attempt:
            time.sleep(policy.backoff_s * 2 ** (attempt - 1))
        data, last, retry = _fetch_once(session, url, policy)
        if data is not None or not retry:
            return data, last
    return None, last


def _fetch_once(session: requests.Session, url: str, policy: FetchPolicy) -> tuple[bytes | None, str | None, bool]:
    session.max_redirects = policy.max_redirects
    try:
        with session.get(url, timeout=policy.timeout_s, stream=True,
                         headers={"User-Agent": policy.user_agent}) as resp:
            for hop in resp.history + [resp]:  # a redirect may not leave http(s) either
                if urlsplit(hop.url).scheme.lower() not in policy.allowed_schemes:
                    return None, "scheme_not_allowed", False
            if resp.status_code != 200:
                return None, f"http_{resp.status_code}", resp.status_code in RETRYABLE_STATUS
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not any(ctype.startswith(a) for a in policy.allowed_content_types):
                return None, "bad_content_type", False
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                return None, "too_large", False
            chunks, total, deadline = [], 0, time.monotonic() + policy.timeout_s * 3
            for chunk in resp.iter_content(64 * 1024):
                total += len(chunk)
                if total > policy.max_bytes:
                    return None, "too_large", False
                if time.monotonic() > deadline:  # a server trickling bytes forever
                    return None, "timeout", True
                chunks.append(chunk)
            data = b"".join(chunks)
            return (data, None, False) if data else (None, "empty", False)
    except requests.TooManyRedirects:
        return None, "too_many_redirects", False
    except requests.exceptions.InvalidSchema:
        return None, "scheme_not_allowed", False
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
        return None, "invalid_url", False
    except requests.Timeout:
        return None, "timeout", True
    except requests.RequestException:
        return None, "connection_error", True
