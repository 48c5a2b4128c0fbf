"""The few faiss operations the global stages need, chunked so float16 inputs of any length
are converted to float32 a slice at a time (faiss only takes float32; 1M x 512 in float32 is
2 GiB, a slice of 64k rows is 128 MiB). GPU when faiss was built with it and sees a device
(`faiss-gpu` extra); the CPU build here otherwise.
"""

from __future__ import annotations

import faiss
import numpy as np

CHUNK_ROWS = 65536


def use_gpu() -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def as_float32(x: np.ndarray, normalize: bool = False) -> np.ndarray:
    """float32 copy (L2-normalised rows if asked; zero rows stay zero)."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
    return out


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalised copy in x's own dtype, a chunk at a time (no float32 copy of the whole)."""
    out = np.empty_like(x)
    for start in range(0, len(x), CHUNK_ROWS):
        out[start:start + CHUNK_ROWS] = as_float32(x[start:start + CHUNK_ROWS], normalize=True)
    return out


def flat_index(centroids: np.ndarray, metric: str = "l2") -> faiss.Index:
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(c.shape[1]) if metric == "ip" else faiss.IndexFlatL2(c.shape[1])
    if use_gpu():
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(c)
    return index


def nearest(x: np.ndarray, centroids: np.ndarray, normalize: bool = False, metric: str = "l2"
            ) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid index int64 [N], its distance float32 [N]). For "l2" the distance is
    the Euclidean distance; for "ip" it is 1 - inner product."""
    index = flat_index(centroids, metric)
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), CHUNK_ROWS):
        chunk = as_float32(x[start:start + CHUNK_ROWS], normalize)
        d, i = index.search(chunk, 1)
        labels[start:start + len(chunk)] = i[:, 0]
        dist[start:start + len(chunk)] = (
            np.sqrt(np.maximum(d[:, 0], 0)) if metric == "l2" else 1.0 - d[:, 0])
    return labels, dist


def lloyd(x: np.ndarray, init_centroids: np.ndarray | int, n_iter: int, seed: int,
          spherical: bool = False) -> np.ndarray:
    """Lloyd iterations (faiss; empty clusters are re-split by faiss) from given centroids, or,
    given a number k, from k random points (faiss' own init, as SemDeDup uses)."""
    x = as_float32(x)
    given = not isinstance(init_centroids, (int, np.integer))
    k = len(init_centroids) if given else int(init_centroids)
    if given and (n_iter <= 0 or k >= len(x)):
        return as_float32(init_centroids)
    km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, spherical=spherical,
                      max_points_per_centroid=max(256, len(x) // k + 1),  # caller subsamples
                      min_points_per_centroid=1,  # small levels (centroids of centroids) are fine
                      gpu=use_gpu(), verbose=False)
    km.train(x, init_centroids=as_float32(init_centroids) if given else None)
    return np.asarray(km.centroids, dtype=np.float32)
