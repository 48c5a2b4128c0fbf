"""Near-duplicate groups of 64-bit hashes on one machine: unique -> banded pairs -> components.

This is the algorithm the `phash` stage distributes (there each table's bucket keys are
shuffled to partitions; here the tables run one after another) and what
`bench/bench_phash_scale.py` times. Memory: the hashes, one table's keys and the verified pairs.
"""

from __future__ import annotations

import numpy as np

from curation.dedup.hamming_bands import choose_num_blocks, make_layout, table_keys, verified_pairs
from curation.dedup.union_find import components


def near_duplicate_pairs(unique_hashes: np.ndarray, max_distance: int, num_blocks: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of *distinct* hashes within `max_distance`, possibly repeated (one per shared
    table). Indices into `unique_hashes`."""
    h = np.asarray(unique_hashes, dtype=np.uint64)
    layout = make_layout(max_distance, num_blocks or choose_num_blocks(len(h), max_distance))
    found_a, found_b = [], []
    for table in range(len(layout.tables)):
        a, b = verified_pairs(table_keys(h, layout, table), h, max_distance)
        found_a.append(a)
        found_b.append(b)
    return np.concatenate(found_a), np.concatenate(found_b)


def group_near_duplicates(hashes: np.ndarray, max_distance: int, num_blocks: int | None = None
                          ) -> np.ndarray:
    """Group label per hash: rows whose hashes chain within `max_distance` share a label (the
    smallest unique-hash index of the group). Identical hashes are grouped by np.unique first, so
    a hash repeated a million times costs nothing in the banding."""
    unique, inverse = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
    a, b = near_duplicate_pairs(unique, max_distance, num_blocks)
    return components(len(unique), a, b)[inverse]
