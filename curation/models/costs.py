"""What one actor of a model stage spends per image on a GPU node: the figures `place()` sizes GPU
actor pools by, so that every stage of a segment passes the same images per second.

On a GPU the networks are cheap and an actor's time per image is mostly what stays on its host
thread (JPEG decode, resizing, letterboxing, DB box extraction and line crops, CTC decoding,
PnP), which `Resources.cost` (the whole stage on one CPU core) does not tell apart. `host_s` is
that host share, measured on the CPU (`bench/gpu_model_stages.py --host-split`, docs/scale.md);
`actor_s`, an actor's wall seconds per image on a GPU (host and device together), needs a GPU
and is not measured yet. Until it is, an actor's time is taken to be its host time.

A measurement made on a GPU node replaces these: `CURATE_STAGE_COSTS=file.json`, the file
`python bench/gpu_model_stages.py --host-split --json file.json` writes there (the stage's
`ms_per_img` on `cuda` becomes `actor_s`, its `host_ms` becomes `host_s`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from curation.config import ConfigError


@dataclass(frozen=True)
class GpuActorCost:
    host_s: float  # CPU seconds per image on the actor's host thread
    actor_s: float | None = None  # wall seconds per image of one actor on a GPU; None: not measured

    @property
    def seconds(self) -> float:
        """An actor's time per image: measured on a GPU, else its host share (a lower bound)."""
        return self.actor_s if self.actor_s is not None else self.host_s


# Host CPU ms per image around the networks, measured on the build machine (12 rows, one thread;
# docs/benchmarks.md "Model stages on GPU nodes"). headpose's figure counts MTCNN's pyramid and
# NMS, which facenet-pytorch runs on the device: on a GPU its host share is smaller.
GPU_ACTOR_COSTS: dict[str, GpuActorCost] = {
    "detect": GpuActorCost(host_s=0.0413),
    "headpose": GpuActorCost(host_s=0.1131),
    "embed": GpuActorCost(host_s=0.0085),
    "text": GpuActorCost(host_s=0.0561),
}


def gpu_actor_costs() -> dict[str, GpuActorCost]:
    """The table above, with what `$CURATE_STAGE_COSTS` (a gpu_model_stages.py JSON) measured."""
    costs = dict(GPU_ACTOR_COSTS)
    path = os.environ.get("CURATE_STAGE_COSTS")
    if not path:
        return costs
    try:
        data = json.loads(Path(path).read_text())
        for name, split in (data.get("host_split") or {}).items():
            if split.get("host_ms") is not None:
                costs[name] = replace(costs.get(name, GpuActorCost(0.0)), host_s=_seconds(split["host_ms"]))
        for name, r in (data.get("stages") or {}).items():
            if r.get("device") == "cuda":
                costs[name] = replace(costs.get(name, GpuActorCost(0.0)), actor_s=_seconds(r["ms_per_img"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"CURATE_STAGE_COSTS={path}: not a bench/gpu_model_stages.py --json file "
                          f"({type(exc).__name__}: {exc})") from None
    return costs


def _seconds(ms: object) -> float:
    """A measured ms figure as seconds; a pool sized by zero, negative or NaN time would be wrong."""
    value = float(ms)  # type: ignore[arg-type]
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{ms!r} ms per image")
    return value / 1000
