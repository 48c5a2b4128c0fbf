"""urllib3 connections that connect only to checked addresses, and the per-URL deadline.

urllib3 resolves a host and connects in one call (`create_connection`) that we cannot check in
between, so the connection class is ours: it resolves once through `address_policy`, checks
every address, and connects to those (see address_policy.py for why). Everything else, TLS with
the host name for SNI and certificates included, is urllib3's.

Socket timeouts are per read: a server sending a byte every few seconds never trips them. A URL's
total budget is enforced by one watchdog thread per process that shuts down the sockets of a
fetch whose deadline has passed, which wakes its thread from any blocked read.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from curation.io.address_policy import AddressPolicy, BlockedAddress, connect


class Deadline:
    """A fetch's total budget; `with Deadline(s):` arms it for the current thread."""

    _current = threading.local()

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self.conns: list[HTTPConnection] = []
        self.lock = threading.Lock()

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expire(self) -> None:
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
        if deadline is None:
            return
        with deadline.lock:
            deadline.conns.append(conn)
        if deadline.expired:
            deadline.expire()

    def __enter__(self):
        self._current.value = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc) -> None:
        self._current.value = None
        with self.lock:
            self.conns.clear()  # an expiry after this must not touch a connection back in the pool
            self.end = -1.0  # done: the watchdog drops it


class _Watchdog:
    """One thread for every deadline of the process (a timer thread per URL cost more CPU than
    the rest of the fetch on small images)."""

    def __init__(self):
        self.heap: list[tuple[float, int, Deadline]] = []
        self.count = itertools.count()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self.cond:
            heapq.heappush(self.heap, (deadline.end, next(self.count), deadline))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self.thread.start()
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.heap:
                    self.cond.wait()
                end, _, deadline = self.heap[0]
                wait = end - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.heap)
            if deadline.end > 0:  # still running (a finished fetch sets end = -1)
                deadline.expire()


_WATCHDOG = _Watchdog()


class _GuardedConnectionMixin:
    address_policy: AddressPolicy

    def _new_conn(self) -> socket.socket:
        try:
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
            sock = connect(self.address_policy, self._dns_host, self.port, timeout, self.source_address,
                           self.socket_options)
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
        Deadline.register(self)
        return super().request(*args, **kwargs)


def guarded_pool_manager(addresses: AddressPolicy, maxsize: int) -> PoolManager:
    """A PoolManager (keep-alive, up to `maxsize` connections a host) whose every connection is
    checked against `addresses`. It reads no proxy variables and no .netrc."""
    attrs = {"address_policy": addresses}
    http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
    https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
    manager = PoolManager(num_pools=256, maxsize=maxsize, block=False)
    manager.pool_classes_by_scheme = {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}
    manager.curation_addresses = addresses  # what fetch() checks it was given
    return manager
