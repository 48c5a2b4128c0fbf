"""Ray's own lines go to the run's log, not the user's terminal.

Ray writes from C++ (core worker warnings such as "Actor ... has constructor arguments in the
object store") straight to file descriptor 2, and from its Python loggers through handlers it
bound to the stderr of the moment ("Progress bars disabled ..."). Neither tells the user anything
about their data. For the length of a run, descriptor 2 is pointed at a temporary file, while
`sys.stderr` (which our progress display and our own log lines use) is a copy of the terminal.
At the end the lines are added to OUT/logs/ray.log, once the run folder exists: a run refused
before any work leaves no folder behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class RayLog:
    path: str | None = None  # where the lines ended up (None: Ray said nothing)


@contextmanager
def ray_lines_to(output: str) -> Iterator[RayLog]:
    # Imported first, so that the handlers Ray and Ray Data configure at import bind to the
    # stderr that is about to point at the log, not to the terminal's copy.
    import ray.data

    del ray
    result = RayLog()
    log_fd, tmp = tempfile.mkstemp(prefix="curate-ray-", suffix=".log")
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    old_stderr = sys.stderr
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    ours = [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old_stderr]
    log_stream = os.fdopen(os.dup(log_fd), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    rays = {h: h.stream for h in _ray_stream_handlers()}
    os.dup2(log_fd, 2)
    sys.stderr = terminal
    for h in ours:  # our own warnings stay on the terminal
        h.setStream(terminal)
    for h in rays:  # Ray's, wherever they were bound
        h.setStream(log_stream)
    try:
        yield result
    finally:
        sys.stderr.flush()
        os.dup2(terminal_fd, 2)
        sys.stderr = old_stderr
        for h in ours:
            h.setStream(old_stderr)
        for h, stream in rays.items():
            h.setStream(stream)
        terminal.close()
        log_stream.close()
        os.close(log_fd)
        result.path = _keep(tmp, output)


def _ray_stream_handlers() -> list[logging.StreamHandler]:
    """The console handlers of Ray's loggers (`ray`, `ray.data`, ...), not its file handlers."""
    loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
               if name == "ray" or name.startswith("ray.")]
    return [h for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler or (isinstance(h, logging.StreamHandler)
                                                    and not isinstance(h, logging.FileHandler))]


def _keep(tmp: str, output: str) -> str | None:
    """Append the lines to OUT/logs/ray.log (a local run folder that exists), else keep the temp file."""
    from curation.io import fs

    if os.path.getsize(tmp) == 0:
        os.unlink(tmp)
        return None
    if fs.is_remote(output) or not os.path.isdir(output):
        return tmp
    final = os.path.join(output, "logs", "ray.log")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    with open(tmp, "rb") as src, open(final, "ab") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(tmp)
    return final
