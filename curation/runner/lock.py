"""One writer per run folder: `curate run` holds `OUT/.lock` for the whole run.

Two runs writing the same OUT would clear and rewrite each other's shards (each one redoes what
it sees unfinished), so the second one is refused at start-up, before it writes anything, with
a line naming the holder.

Local (and NFSv4) folders: an exclusive `flock` on `OUT/.lock`. The kernel drops it when the
holder exits, however it exits, so a killed run never blocks its own resume.

s3:// folders: S3 has no locks and pyarrow has no conditional PUT, so this is an advisory lease:
the holder writes `OUT/.lock` (pid, host, a random token) and rewrites it every `HEARTBEAT_S`;
a newcomer refuses while the lease is younger than `STALE_S`, else takes it over, waits
`SETTLE_S` and reads it back; if another token won the race, it refuses. Two runs that start
within the same second can still both pass; a killed run blocks the folder for up to `STALE_S`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from curation.config import ConfigError
from curation.io import fs

HEARTBEAT_S = 30.0
STALE_S = 120.0
SETTLE_S = 1.0


class RunLocked(ConfigError):
    """Another run holds the output folder (a ConfigError so the CLI prints one line, exit 2)."""


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def _refuse(out: str, info: dict[str, Any]) -> RunLocked:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return RunLocked(f"{out} is in use by another curate run (pid {info.get('pid', '?')} on "
                     f"{info.get('host', '?')}, since {since}); wait for it to finish or use another --output")


@contextmanager
def run_lock(out: str) -> Iterator[None]:
    lock = _S3Lease if fs.is_remote(out) else _FileLock
    with lock(out.rstrip("/")).held():
        yield


class _FileLock:
    def __init__(self, out: str):
        self.out = out
        self.path = os.path.join(fs.resolve(out)[1], ".lock")

    @contextmanager
    def held(self) -> Iterator[None]:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by Ray's children
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _refuse(self.out, _read_json_fd(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder()).encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock; the file stays (unlinking a flock file races)


def _read_json_fd(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is between truncate and write
        return {}


class _S3Lease:
    def __init__(self, out: str):
        self.out = out
        self.uri = fs.join(out, ".lock")
        self.info = {**_holder(), "token": uuid.uuid4().hex}
        self.stop = threading.Event()

    def _read(self) -> dict[str, Any] | None:
        try:
            return fs.read_json(self.uri) if fs.exists(self.uri) else None
        except (OSError, ValueError):
            return None

    def _write(self) -> None:
        fs.write_json(self.uri, {**self.info, "heartbeat": time.time()})

    @contextmanager
    def held(self) -> Iterator[None]:
        current = self._read()
        if current and time.time() - current.get("heartbeat", 0) < STALE_S:
            raise _refuse(self.out, current)
        self._write()
        time.sleep(SETTLE_S)
        current = self._read()
        if not current or current.get("token") != self.info["token"]:
            raise _refuse(self.out, current or {})
        beat = threading.Thread(target=self._beat, daemon=True, name="curate-lock-heartbeat")
        beat.start()
        try:
            yield
        finally:
            self.stop.set()
            beat.join(timeout=10)
            current = self._read()
            if current and current.get("token") == self.info["token"]:
                fs.delete_file(self.uri)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError:  # a missed beat is retried at the next tick; STALE_S covers 3 misses
                pass
