"""Fetch one URL for ingest: allow-listed schemes, checked addresses, a total time budget,
retries, and size and redirect caps. http(s) here; `s3://` rows go through pyarrow.fs
(s3fetch.py) under the same policy.

Every failure is returned as a reason string (recorded as the row's reject), never raised.
img2dataset does the same job but as a whole tool with its own output format; we need its
per-URL core inside our read tasks, so this is a small urllib3-based version: urllib3 alone, not
requests, because requests' per-request preparation (hooks, cookies, settings merges) cost as
much CPU as the rest of the fetch (docs/benchmarks.md). Redirects are followed here, one checked
hop at a time. Connections and the per-URL deadline are in guarded_pool.py.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from urllib3 import PoolManager, Timeout
from urllib3.exceptions import HTTPError, LocationValueError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from curation.io.address_policy import BlockedAddress
from curation.io.fetch_policy import SUPPORTED_SCHEMES, FetchPolicy
from curation.io.guarded_pool import Deadline, guarded_pool_manager

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
_CHUNK = 256 * 1024


def scheme_reason(url: str, policy: FetchPolicy) -> str | None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # "http://[::1" and the like
        return "invalid_url"
    return None if scheme in policy.allowed_schemes and scheme in SUPPORTED_SCHEMES else "scheme_not_allowed"


def redact(url: str) -> str:
    """The URL without its userinfo (`user:secret@`): what is stored in `source` and logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def new_session(policy: FetchPolicy, maxsize: int = 64) -> PoolManager:
    """The connection pools URL rows are fetched through: every connection checked against
    `policy.addresses`; no proxy variables, no .netrc (a proxy would connect where we cannot
    check, and .netrc would send our credentials to hosts named by the crawl)."""
    return guarded_pool_manager(policy.addresses, maxsize)


def fetch(session: PoolManager, url: str, policy: FetchPolicy) -> tuple[bytes | None, str | None]:
    """(bytes, None) on success, (None, reason) on failure. `session` comes from new_session():
    a plain pool would connect anywhere."""
    if not isinstance(url, str) or not url.strip():
        return None, "missing_url"
    reason = scheme_reason(url, policy)
    if reason:
        return None, reason
    if url.lower().startswith("s3:"):
        from curation.io.s3fetch import fetch_s3

        return fetch_s3(url, policy)  # the SDK retries with its own backoff, `retries` times at most
    if getattr(session, "curation_addresses", None) is None:
        raise TypeError("fetch() needs a session from new_session(), which checks every address")
    last = "connection_error"
    with Deadline(policy.budget_s) as deadline:
        for attempt in range(policy.retries + 1):
            if attempt:
                time.sleep(min(policy.backoff_s * 2 ** (attempt - 1), deadline.left()))
            if deadline.expired:
                return None, "timeout"
            data, last, retry = _fetch_once(session, url, policy, deadline)
            if data is not None or not retry:
                return data, last
    return None, last


def _fetch_once(pool: PoolManager, url: str, policy: FetchPolicy,
                deadline: Deadline) -> tuple[bytes | None, str | None, bool]:
    resp = None
    try:
        for _ in range(policy.max_redirects + 1):
            timeout = max(0.05, min(policy.timeout_s, deadline.left()))
            resp = pool.urlopen("GET", redact(url), headers=_headers(url, policy), redirect=False,
                                retries=False, preload_content=False, timeout=Timeout(connect=timeout, read=timeout))
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUS or not location:
                break
            resp.close()  # not drained: a redirect's body can be as long as the server likes
            resp.release_conn()
            resp = None
            # A hop is checked like a row: scheme here, its address when it connects. The
            # userinfo of the row goes only to the row's own host.
            nxt = urljoin(url, location)
            if urlsplit(nxt).scheme.lower() not in ("http", "https") or \
                    urlsplit(nxt).scheme.lower() not in policy.allowed_schemes:
                return None, "scheme_not_allowed", False
            url = nxt if urlsplit(nxt).hostname == urlsplit(url).hostname else redact(nxt)
        else:
            return None, "too_many_redirects", False
        if resp.status != 200:
            return None, f"http_{resp.status}", resp.status in RETRYABLE_STATUS
        # Content-Type is not checked: servers lie both ways, and decode sniffs the bytes.
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > policy.max_bytes:
            return None, "too_large", False
        chunks, total = [], 0
        for chunk in resp.stream(_CHUNK, decode_content=False):
            total += len(chunk)
            if total > policy.max_bytes:
                return None, "too_large", False
            if deadline.expired:
                return None, "timeout", False
            chunks.append(chunk)
        resp.release_conn()  # read to the end: the connection is kept alive for the next URL
        resp = None
        data = b"".join(chunks)
        return (data, None, False) if data else (None, "empty_file", False)
    except (LocationValueError, ValueError, UnicodeError):
        return None, "invalid_url", False
    except (HTTPError, OSError) as exc:
        if _caused_by(exc, BlockedAddress):
            return None, "blocked_address", False
        if deadline.expired:
            return None, "timeout", False
        if _caused_by(exc, Urllib3Timeout, TimeoutError):
            return None, "timeout", True
        return None, "connection_error", True
    finally:
        if resp is not None:  # left early: drop the connection rather than drain the body
            resp.close()
            resp.release_conn()


def _headers(url: str, policy: FetchPolicy) -> dict[str, str]:
    # identity: a compressed body would be inflated by the client, past any size we checked.
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    parts = urlsplit(url)
    if parts.username is not None:  # user:secret@ in the row: sent as Basic auth, never stored
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return headers


def _caused_by(exc: BaseException, *types: type) -> bool:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]  # the exception, its causes, contexts and wrapped reasons
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]]
    return False
