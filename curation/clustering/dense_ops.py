"""Distance products for the hierarchy's fit in torch, in float32 or bfloat16.

bfloat16 matrix products run on the CPU's AMX tiles (Sapphire Rapids and later) at about 3x the
float32 rate (docs/benchmarks.md), and on any GPU. Their output is bfloat16 too (torch has no
bf16 x bf16 -> fp32 product on the CPU), so the product must land near zero to keep its precision:
rows are augmented so that one product gives half the squared distance,

    x' = [x, |x|^2/2 (hi), |x|^2/2 (lo), 1, 1],   c' = [-c, 1, 1, |c|^2/2 (hi), |c|^2/2 (lo)],
    x' . c' = |x - c|^2 / 2,

with each half-norm split into a bfloat16 value and its bfloat16 remainder, so the only rounding
left is the inputs' (2^-9 of each coordinate) and the output's (2^-9 of d^2/2, not of x.c ~ 1).
Labels and distances come from that product.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: loading the config must not load torch
    import torch

from curation.clustering import faiss_ops

CHUNK_ROWS = 8192  # a chunk's [rows, k] scores stay small enough to argmin from cache
PRECISIONS = ("auto", "float32", "bfloat16")


def fast_bfloat16() -> bool:
    """True where bfloat16 products are fast: a GPU, or a CPU with AMX tiles."""
    import torch

    if torch.cuda.is_available():
        return True
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def resolve(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bfloat16" if fast_bfloat16() else "float32"
    return precision


def _device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def torch_threads(n: int | None):
    """Run a block on n torch threads (None: leave as is), restoring the count after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Points:
    """Rows ready for distance products: augmented (see `augment`) in the compute dtype. Built
    once per level a chunk at a time from rows of any float dtype (no float32 copy of the whole);
    subsets (`take`) index it, and the values for centroid means are read back from it."""

    def __init__(self, rows: torch.Tensor, dim: int):

        self.rows, self.dim, self.dtype = rows, dim, rows.dtype
        self._centres: torch.Tensor | None = None

    @classmethod
    def from_array(cls, x: np.ndarray, precision: str, normalize: bool = False, chunk_rows: int = 65536) -> Points:
        import torch

        dtype = torch.bfloat16 if resolve(precision) == "bfloat16" else torch.float32
        n, d = x.shape
        rows = torch.empty((n, _width(d)), dtype=dtype, device=_device())
        for start in range(0, n, chunk_rows):
            v = torch.from_numpy(np.array(x[start:start + chunk_rows], dtype=np.float32)).to(rows.device)
            if normalize:
                v /= torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_(min=1e-12)
            rows[start:start + len(v)] = augment(v, dtype, as_centres=False)
        return cls(rows, d)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray) -> Points:
        import torch

        return Points(self.rows[torch.from_numpy(np.asarray(index, dtype=np.int64)).to(self.rows.device)], self.dim)

    def values(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """float32 coordinates of rows start:stop (as rounded to the compute dtype)."""
        return self.rows[start:stop, :self.dim].float()

    @property
    def as_centres(self) -> torch.Tensor:
        if self._centres is None:
            self._centres = augment(self.values(), self.dtype, as_centres=True)
        return self._centres


def _width(d: int) -> int:
    return -(-(d + 4) // 32) * 32  # the four extra columns, rounded up to the AMX tile's depth


def augment(v: torch.Tensor, dtype: torch.dtype, as_centres: bool) -> torch.Tensor:
    """[n, D] float32 -> [n, D'] rows whose products give half squared distances (module doc)."""
    import torch

    n, d = v.shape
    out = torch.zeros((n, _width(d)), dtype=dtype, device=v.device)
    rounded = v.to(dtype)
    out[:, :d] = -rounded if as_centres else rounded
    half = rounded.float().square().sum(dim=1).mul_(0.5)
    hi = half.to(dtype)
    lo = (half - hi.float()).to(dtype)
    norm_at, ones_at = (d + 2, d) if as_centres else (d, d + 2)
    out[:, norm_at] = hi
    out[:, norm_at + 1] = lo
    out[:, ones_at:ones_at + 2] = 1
    return out


def assign(points: Points, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest centre int64 [n], half its squared distance float32 [n]) of every point;
    centres = augmented rows (`augment`)."""
    import torch

    labels = torch.empty(len(points), dtype=torch.int64, device=points.rows.device)
    half_d2 = torch.empty(len(points), dtype=torch.float32, device=points.rows.device)
    # one score buffer for every chunk: a fresh [8192, k] tensor per chunk is a fresh mmap, and
    # its page faults cost a quarter of the CPU at k = 10000 (system time)
    buffer = torch.empty((min(CHUNK_ROWS, len(points)), len(centres)), dtype=points.dtype, device=points.rows.device)
    for start in range(0, len(points), CHUNK_ROWS):
        chunk = points.rows[start:start + CHUNK_ROWS]
        scores = torch.mm(chunk, centres.T, out=buffer[:len(chunk)])
        if scores.dtype == torch.bfloat16:
            # torch's bfloat16 argmin is several times slower than the product; scores >= 0 (up
            # to rounding) order like their bits read as int16, whose min is vectorised
            best = scores.view(torch.int16).min(dim=1)
            values = best.values.view(torch.bfloat16)
        else:
            best = scores.min(dim=1)
            values = best.values
        labels[start:start + len(chunk)] = best.indices
        half_d2[start:start + len(chunk)] = values
    return labels, half_d2


def nearest(points: Points, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid int64 [N], its Euclidean distance float32 [N]). In bfloat16 the
    distance carries the product's rounding (2^-9 of d^2): enough to rank a cluster's points."""
    import torch

    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(points.rows.device)
    labels, half_d2 = assign(points, augment(c, points.dtype, as_centres=True))
    return labels.cpu().numpy(), half_d2.clamp_(min=0).mul_(2).sqrt_().cpu().numpy()


def nearest_rows(x: np.ndarray, centroids: np.ndarray, precision: str, normalize: bool = False,
                 chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """`nearest` for rows of any float dtype, a chunk at a time (the stage's assignment map);
    faiss where the products are float32 (its search is faster than torch's there)."""

    if resolve(precision) == "float32":
        return faiss_ops.nearest(x, centroids, normalize=normalize)
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk_rows):
        stop = start + chunk_rows
        labels[start:stop], dist[start:stop] = nearest(
            Points.from_array(x[start:stop], precision, normalize), centroids)
    return labels, dist


def lloyd(points: Points, centroids: np.ndarray, n_iter: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd iterations from `centroids`. An emptied cluster takes over half of a cluster drawn
    by size (its centroid nudged apart from that one's), as faiss does."""
    import torch

    c = torch.from_numpy(np.array(centroids, dtype=np.float32)).to(points.rows.device)
    k, d = c.shape
    for _ in range(n_iter):
        labels, _ = assign(points, augment(c, points.dtype, as_centres=True))
        counts = torch.bincount(labels, minlength=k).to(torch.float32)
        sums = torch.zeros((k, d), dtype=torch.float32, device=c.device)
        for start in range(0, len(points), CHUNK_ROWS):
            sums.index_add_(0, labels[start:start + CHUNK_ROWS], points.values(start, start + CHUNK_ROWS))
        full = counts > 0
        c[full] = sums[full] / counts[full, None]
        for empty in torch.nonzero(~full).flatten().tolist():
            p = (counts - 1).clamp_(min=0).cpu().numpy().astype(np.float64)
            if p.sum() <= 0:
                break
            donor = int(rng.choice(k, p=p / p.sum()))
            nudge = torch.from_numpy(rng.standard_normal(d).astype(np.float32) * np.float32(1e-3)).to(c.device)
            c[empty], c[donor] = c[donor] + nudge, c[donor] - nudge
            counts[empty] = counts[donor] = counts[donor] / 2
    return c.cpu().numpy()


def greedy_seeds(points: Points, k: int, rng: np.random.Generator, n_trials: int | None) -> np.ndarray:
    """Greedy k-means++ (see hierarchical_kmeans.kmeans_plusplus) on `points`: [k, D] float32."""
    import torch

    n = len(points)
    trials = max(1, 2 + int(np.log(k)) if n_trials is None else int(n_trials))
    cand = points.as_centres
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    closest = (points.rows @ cand[chosen[0]]).float().mul_(2).clamp_(min=0)
    for c in range(1, k):
        cum = torch.cumsum(closest.double(), dim=0)
        total = float(cum[-1])
        if total <= 0:  # fewer distinct points than k: repeat a point, Lloyd will empty it
            chosen[c] = int(rng.integers(n))
            continue
        draws = torch.from_numpy(rng.random(trials) * total).to(cum.device)
        picks = torch.searchsorted(cum, draws).clamp_(max=n - 1)
        d = (points.rows @ cand[picks].T).float().mul_(2).clamp_(min=0)
        d = torch.minimum(d, closest[:, None])
        best = int(d.sum(dim=0).argmin())
        closest = d[:, best].contiguous()
        chosen[c] = int(picks[best])
    return points.take(chosen).values().cpu().numpy()
