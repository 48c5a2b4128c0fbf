"""Hand-fused CPU autograd kernels, kept apart from the model's maths (training/layers/).

The layers are written in plain torch ops. Where `active(...)` says so (CPU, fp32, autocast off,
the switch on), a layer hands its arithmetic to the matching function in `kernels/cpu.py`, which
computes the same values with fewer passes over the activations. `fused_cpu_kernels(False)` turns
every kernel off at once: tests run both ways and compare outputs and gradients.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

_ENABLED = True


@contextlib.contextmanager
def fused_cpu_kernels(enabled: bool):
    """Temporarily enable or disable the hand-fused CPU kernels (the one switch)."""
    global _ENABLED
    previous, _ENABLED = _ENABLED, enabled
    try:
        yield
    finally:
        _ENABLED = previous


def active(*tensors: Tensor) -> bool:
    """Whether a layer should run its kernels/cpu.py version: the switch is on, every tensor is
    fp32 on the CPU, and CPU autocast is off (under autocast the plain ops' dtype rules apply)."""
    return (
        _ENABLED
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled("cpu")
    )
