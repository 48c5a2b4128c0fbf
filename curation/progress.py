"""Progress lines for `curate run`: one line per finished shard batch, safe for logs and CI."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class LineProgress:
    """Prints at most one line per `every_s` seconds per job, and always the last shard."""

    def __init__(self, console: Console, every_s: float = 2.0):
        self.console = console
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") != "shard_done":
            return
        job = "+".join(event["stages"])
        now = time.monotonic()
        last = event["done"] == event["total"]
        if not last and now - self._last.get(job, 0.0) < self.every_s:
            return
        self._last[job] = now
        secs = max(event.get("seconds", 0.0), 1e-6)
        self.console.print(f"{job}: {event['done']}/{event['total']} shards ({secs:.1f}s)", highlight=False)
