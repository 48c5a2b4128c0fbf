"""Ray's own lines go to the run's log, not the user's terminal.

Ray writes from C++ (core worker warnings such as "Actor ... has constructor arguments in the
object store") straight to file descriptor 2, and from its Python loggers through handlers it
bound to the stderr of the moment ("Progress bars disabled ..."). Neither tells the user anything
about their data. For the length of a run, descriptor 2 is pointed at the log file, while
`sys.stderr` (which our progress display and our own log lines use) is a copy of the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_lines_to(path: str) -> Iterator[str]:
    # Imported first, so that the handlers Ray and Ray Data configure at import bind to the
    # stderr that is about to point at the log, not to the terminal's copy.
    import ray.data

    del ray
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sys.stderr.flush()
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal_fd = os.dup(2)
    old_stderr = sys.stderr
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    ours = [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old_stderr]
    os.dup2(log_fd, 2)
    sys.stderr = terminal
    for h in ours:  # our own warnings stay on the terminal
        h.setStream(terminal)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(terminal_fd, 2)
        sys.stderr = old_stderr
        for h in ours:
            h.setStream(old_stderr)
        terminal.close()
        os.close(log_fd)


def log_path_for(output: str) -> str:
    """OUT/logs/ray.log for a local run folder; a temp file for an object-store one."""
    from curation.io import fs

    if fs.is_remote(output):
        import tempfile

        return os.path.join(tempfile.gettempdir(), f"curate-ray-{os.getpid()}.log")
    return os.path.join(output, "logs", "ray.log")
