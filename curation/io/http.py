"""Fetch one URL for ingest: allow-listed schemes, checked addresses, a total time budget,
retries, and size and redirect caps. http(s) here; `s3://` rows go through pyarrow.fs
(s3fetch.py) under the same policy.

Every failure is returned as a reason string (recorded as the row's reject), never raised.
img2dataset does the same job but as a whole tool with its own output format; we need its
per-URL core inside our read tasks, so this is a small requests-based version. Connections go
through `address_policy` (urllib3 resolves and connects in one call we cannot check, so the
connection class is ours), and a per-URL watchdog closes the socket of a response that drips
bytes: socket timeouts are per read, so they never end a server sending a byte every few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from curation.io.address_policy import AddressPolicy, BlockedAddress, connect

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# What fetch() can read at all; `allowed_schemes` picks among these (file://, ftp:// ... never).
SUPPORTED_SCHEMES = ("http", "https", "s3")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float = 10.0  # connect, and each read
    budget_s: float = 30.0  # the whole URL: every attempt, redirect and byte
    retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    allowed_schemes: tuple[str, ...] = SUPPORTED_SCHEMES
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    user_agent: str = "curation/0.1 (research dataset builder)"


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


def new_session(policy: FetchPolicy) -> requests.Session:
    """A session whose every connection is checked against `policy.addresses`. It ignores the
    environment (proxies, .netrc): a proxy would connect where we cannot check, and .netrc would
    send our credentials to hosts named by the crawl."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = policy.max_redirects
    adapter = _GuardedAdapter(policy.addresses, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.curation_addresses = policy.addresses  # what fetch() checks it was given
    return session


def fetch(session: requests.Session, url: str, policy: FetchPolicy) -> tuple[bytes | None, str | None]:
    """(bytes, None) on success, (None, reason) on failure. `session` comes from new_session():
    a plain requests session would connect anywhere."""
    if getattr(session, "curation_addresses", None) is None:
        raise TypeError("fetch() needs a session from new_session(), which checks every address")
    if not isinstance(url, str) or not url.strip():
        return None, "missing_url"
    reason = scheme_reason(url, policy)
    if reason:
        return None, reason
    if url.lower().startswith("s3:"):
        from curation.io.s3fetch import fetch_s3

        return fetch_s3(url, policy)  # the SDK retries with its own backoff, `retries` times at most
    last = "connection_error"
    with _Deadline(policy.budget_s) as deadline:
        for attempt in range(policy.retries + 1):
            if attempt:
                time.sleep(min(policy.backoff_s * 2 ** (attempt - 1), deadline.left()))
            if deadline.expired:
                return None, "timeout"
            data, last, retry = _fetch_once(session, url, policy, deadline)
            if data is not None or not retry:
                return data, last
    return None, last


def _fetch_once(session: requests.Session, url: str, policy: FetchPolicy,
                deadline: _Deadline) -> tuple[bytes | None, str | None, bool]:
    resp = None
    try:
        timeout = max(0.05, min(policy.timeout_s, deadline.left()))
        # identity: a compressed body would be inflated by the client, past any size we checked.
        headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
        resp = session.get(url, timeout=timeout, stream=True, headers=headers)
        for hop in resp.history + [resp]:  # a redirect may not leave http(s) either
            if urlsplit(hop.url).scheme.lower() not in policy.allowed_schemes:
                return None, "scheme_not_allowed", False
        if resp.status_code != 200:
            return None, f"http_{resp.status_code}", resp.status_code in RETRYABLE_STATUS
        # Content-Type is not checked: servers lie both ways, and decode sniffs the bytes.
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > policy.max_bytes:
            return None, "too_large", False
        chunks, total = [], 0
        for chunk in resp.raw.stream(_CHUNK, decode_content=False):
            total += len(chunk)
            if total > policy.max_bytes:
                return None, "too_large", False
            if deadline.expired:
                return None, "timeout", False
            chunks.append(chunk)
        resp.raw.release_conn()  # read to the end: the connection is kept alive for the next URL
        resp = None
        data = b"".join(chunks)
        return (data, None, False) if data else (None, "empty_file", False)
    except requests.TooManyRedirects:
        return None, "too_many_redirects", False
    except requests.exceptions.InvalidSchema:
        return None, "scheme_not_allowed", False
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError, UnicodeError):
        return None, "invalid_url", False
    except requests.RequestException as exc:
        if _caused_by(exc, BlockedAddress):
            return None, "blocked_address", False
        if deadline.expired:
            return None, "timeout", False
        if isinstance(exc, requests.Timeout) or _caused_by(exc, Urllib3Timeout, TimeoutError):
            return None, "timeout", True
        return None, "connection_error", True
    except Exception as exc:  # noqa: BLE001 - the body is read from urllib3 directly: its errors
        if deadline.expired:
            return None, "timeout", False
        if _caused_by(exc, Urllib3Timeout, TimeoutError):
            return None, "timeout", True
        return None, "connection_error", True
    finally:
        if resp is not None:  # left early: drop the connection rather than drain the body
            resp.close()


def _caused_by(exc: BaseException, *types: type) -> bool:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]]
    return False


class _Deadline:
    """The URL's total budget. When it runs out, the sockets of this fetch are shut down, which
    wakes the fetching thread from any blocked read (connect, headers or body)."""

    _current = threading.local()

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self.conns: list[HTTPConnection] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for conn in self.conns:
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    @classmethod
    def register(cls, conn: HTTPConnection) -> None:
        deadline = getattr(cls._current, "value", None)
        if deadline is not None:
            with deadline.lock:
                deadline.conns.append(conn)
            if deadline.expired:
                deadline._expire()

    def __enter__(self):
        self._current.value = self
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self._current.value = None


class _GuardedConnectionMixin:
    """urllib3's connection with our resolve-check-connect in place of its own."""

    address_policy: AddressPolicy

    def _new_conn(self) -> socket.socket:
        try:
            sock = connect(self.address_policy, self._dns_host, self.port, _seconds(self.timeout),
                           self.source_address, self.socket_options)
        except BlockedAddress as exc:
            raise NewConnectionError(self, f"blocked: {exc}") from exc
        except socket.gaierror as exc:
            raise NewConnectionError(self, f"cannot resolve {self.host}: {exc}") from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"failed to connect: {exc}") from exc
        return sock

    def request(self, *args, **kwargs):  # every use of a (possibly kept-alive) connection
        _Deadline.register(self)
        return super().request(*args, **kwargs)


def _seconds(timeout: object) -> float | None:
    return float(timeout) if isinstance(timeout, (int, float)) else None


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, addresses: AddressPolicy, **kwargs):
        attrs = {"address_policy": addresses}
        http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
        https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
        self._pool_classes = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
