"""Where a model runs and with how many threads: one place, so every wrapper agrees."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from curation.config import ConfigError


def ray_gpus() -> list[str] | None:
    """The GPU ids Ray assigned to this worker, or None outside a Ray worker (driver, tests, benchmarks).

    Ray narrows CUDA_VISIBLE_DEVICES only for an actor it gave a GPU; an actor placed with
    `num_gpus=0` on a GPU node still sees every GPU. Asking Ray is the only way to tell a CPU
    placement from a GPU one inside the actor.
    """
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray._private.worker.WORKER_MODE:
        return None
    return [str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def torch_device(preference: str | None = None) -> str:
    """Where a model runs: an explicit preference (checked), else the placement's.

    Inside a Ray worker: `cuda` when Ray gave it a GPU, the CPU when it gave none (even on a GPU
    node: a stage placed on the CPU never takes a GPU it did not ask Ray for). Outside Ray: `cuda`
    when a GPU is visible, else `cpu`.
    """
    import torch

    gpus = ray_gpus()
    if preference:
        if preference.startswith("cuda") and gpus == []:
            raise ConfigError(f"device {preference!r} requested but Ray gave this stage no GPU: "
                              f"set the stage's num_gpus (and run on a cluster with GPUs)")
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r} requested but torch sees no CUDA device")
        return preference
    if gpus is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if gpus and not torch.cuda.is_available():
        raise ConfigError(f"Ray gave this stage GPU {', '.join(gpus)} but torch sees no CUDA device "
                          f"(a CPU-only torch build, or a driver problem on this node)")
    return "cuda" if gpus else "cpu"


def check_device(preference: str | None, key: str) -> None:
    """Start-up check of a `device:` config value, so a typo fails before any work."""
    if preference is None:
        return
    if preference != "cpu" and not preference.startswith("cuda"):
        raise ConfigError(f"{key}: expected cpu, cuda or cuda:N, got {preference!r}")
    torch_device(preference)


def set_threads(n: float | None) -> int:
    """Intra-op threads for torch from the CPUs the stage was given (at least 1)."""
    import torch

    threads = max(1, round(n or 1))
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random initialisation that is the same in every actor, without touching global RNG state.

    `embed` and `quality` both build the CLIP model under `weights: random`; the same seed gives
    the same random towers, so quality's text embeddings live in embed's (random) space.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
