"""Planted mixtures with known components, and the balance measures the cluster/sample
benchmarks and tests report: how evenly a selection covers the true components.

The mixture imitates web embeddings the way the curation recipe sees them: unit vectors, many
components with power-law sizes (a few huge concepts, a long tail), and, optionally, components
grouped around a few broader centres, which gives the data a second level of real structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.clustering.balanced_sampling import hierarchical_sample

CHUNK = 100_000  # rows drawn at a time: never a float32 copy of the whole set


@dataclass(frozen=True)
class Mixture:
    n: int = 200_000
    dim: int = 256
    n_components: int = 500
    size_ratio: float = 200.0  # largest / smallest component
    n_groups: int = 20  # 0: flat, component centres drawn uniformly on the sphere
    group_spread: float = 0.6  # component centre's offset from its group centre (norm, before projection)
    spread: float = 0.5  # a point's offset from its component centre (norm, before projection)


def component_sizes(m: Mixture) -> np.ndarray:
    """Sizes proportional to rank^-a with a chosen so that largest/smallest = size_ratio,
    summing exactly to m.n."""
    a = np.log(m.size_ratio) / np.log(m.n_components) if m.n_components > 1 else 0.0
    w = np.arange(1, m.n_components + 1, dtype=np.float64) ** -a
    sizes = np.floor(m.n * w / w.sum()).astype(np.int64)
    sizes[: m.n - int(sizes.sum())] += 1  # the rounding remainder to the largest
    return sizes


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_mixture(m: Mixture, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [n, dim] float16 unit rows, component of each row, group of each component)."""
    rng = np.random.default_rng(seed)
    sizes = component_sizes(m)
    if m.n_groups > 0:
        group_of = rng.integers(m.n_groups, size=m.n_components)
        groups = _unit(rng.standard_normal((m.n_groups, m.dim)))
        offsets = rng.standard_normal((m.n_components, m.dim)) * (m.group_spread / np.sqrt(m.dim))
        centres = _unit(groups[group_of] + offsets)
    else:
        group_of = np.zeros(m.n_components, dtype=np.int64)
        centres = _unit(rng.standard_normal((m.n_components, m.dim)))
    component = rng.permutation(np.repeat(np.arange(m.n_components), sizes))
    centres = centres.astype(np.float32)
    x = np.empty((m.n, m.dim), dtype=np.float16)
    for start in range(0, m.n, CHUNK):
        c = component[start:start + CHUNK]
        noise = rng.standard_normal((len(c), m.dim), dtype=np.float32) * np.float32(m.spread / np.sqrt(m.dim))
        x[start:start + len(c)] = _unit(centres[c] + noise)
    return x, component, group_of


def balance(component: np.ndarray, counts: np.ndarray, n_components: int) -> dict[str, float]:
    """How evenly `counts` (times each row is selected) covers the components:
    entropy  H / log C of the selection's component histogram (1.0 = perfectly even),
    covered  share of components with at least one selected row,
    max_min  largest / smallest count among covered components."""
    hist = np.bincount(component, weights=counts, minlength=n_components)
    p = hist[hist > 0] / hist.sum()
    return {"entropy": float(-(p * np.log(p)).sum() / np.log(n_components)),
            "covered": float((hist > 0).mean()),
            "max_min": float(hist.max() / hist[hist > 0].min())}


def uniform_counts(n: int, target: int, seed: int = 0) -> np.ndarray:
    """Uniform random selection of `target` of `n` rows, as counts."""
    counts = np.zeros(n, dtype=np.int32)
    counts[np.random.default_rng(seed).choice(n, size=target, replace=False)] = 1
    return counts


def oracle_counts(component: np.ndarray, target: int, seed: int = 0) -> np.ndarray:
    """The size-aware oracle: the capping rule applied to the true components (the best a
    sampler that knew them could do)."""
    return hierarchical_sample(component[:, None], target, seed=seed)
