"""Where a model runs and with how many threads: one place, so every wrapper agrees."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from curation.config import ConfigError


def torch_device(preference: str | None = None) -> str:
    """`cuda` when a GPU is visible, else `cpu`; an explicit preference wins (checked)."""
    import torch

    if preference:
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r} requested but torch sees no CUDA device")
        return preference
    return "cuda" if torch.cuda.is_available() else "cpu"


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
