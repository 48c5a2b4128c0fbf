"""Near-duplicate groups of 64-bit hashes on one machine: banded pairs -> components.

This is the algorithm the `phash` stage distributes (there each table's bucket keys are
shuffled to partitions; here the tables run one after another) and what
`bench/bench_phash_scale.py` times. Memory: the hashes, one table's keys and the verified pairs.
"""

from __future__ import annotations

import numpy as np

from curation.dedup.hamming_bands import (
    choose_num_blocks,
    make_layout,
    packed_table,
    pairs_in_sorted,
    table_keys,
    verified_pairs,
)
from curation.dedup.union_find import components


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, num_blocks: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows whose hashes are within `max_distance` - enough of them to connect every
    group (identical hashes come as a star), possibly repeated (one per shared table)."""
    h = np.asarray(hashes, dtype=np.uint64)
    layout = make_layout(max_distance, num_blocks or choose_num_blocks(len(h), max_distance))
    found_a, found_b = [], []
    idx_bits = max(1, int(len(h) - 1).bit_length())
    table_bits = int(len(layout.tables) - 1).bit_length()
    packed = np.empty(len(h), dtype=np.uint64)  # one buffer, reused by every table
    for table in range(len(layout.tables)):
        if layout.key_bits + table_bits + idx_bits <= 64:
            packed_table(h, layout, table, idx_bits, out=packed)
            packed.sort()
            a, b = pairs_in_sorted(packed, idx_bits, h, max_distance)
        else:  # > 2^28 rows on one machine: keys and row ids no longer share a uint64
            a, b = verified_pairs(table_keys(h, layout, table), h, max_distance)
        found_a.append(a)
        found_b.append(b)
    return np.concatenate(found_a), np.concatenate(found_b)


def group_near_duplicates(hashes: np.ndarray, max_distance: int, num_blocks: int | None = None
                          ) -> np.ndarray:
    """Group label per row: rows whose hashes chain within `max_distance` share a label (the
    smallest row index of the group). Identical hashes are collapsed inside each bucket by
    `verified_pairs`, so a hash repeated a million times costs a million, not 10^12. (No global
    np.unique first: its argsort was 10% of the time at 10M rows.)"""
    h = np.asarray(hashes, dtype=np.uint64)
    a, b = near_duplicate_pairs(h, max_distance, num_blocks)
    return components(len(h), a, b)
