"""Candidate pairs within Hamming distance d of 64-bit hashes, by multi-index banding.

Why hand-written: no library finds all pairs within Hamming distance d among billions of 64-bit
hashes (faiss' binary indexes answer k-NN / range queries one query at a time and hold the whole
set in one index). The banding below is the "permuted tables" scheme of Manku et al. (WWW 2007,
simhash near-duplicates at Google) and is what a key-partitioned shuffle can run:

Split the 64 bits into B >= d+1 blocks. Two hashes within distance d differ in at most d blocks,
so they agree exactly on at least B-d blocks (pigeonhole). One *table* per choice of B-d blocks
(C(B, d) tables); a table's key is those blocks' bits. Every pair within distance d shares the key
of at least one table, so grouping rows by key and verifying the pairs inside each bucket with a
popcount finds all of them - no false negatives by construction - while the key width
(~64*(B-d)/B bits) keeps buckets small. More blocks = more tables but emptier buckets.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

HASH_BITS = 64
MAX_TABLES = 256


@dataclass(frozen=True)
class BandLayout:
    max_distance: int
    blocks: tuple[tuple[int, int], ...]  # (shift, width) of each block of the 64-bit hash
    tables: tuple[tuple[int, ...], ...]  # the B-d block indices forming each table's key

    @property
    def key_bits(self) -> int:
        """Widest table key, in bits (the packing in `verified_pairs` needs it)."""
        return max(sum(self.blocks[b][1] for b in t) for t in self.tables)

    @property
    def min_key_bits(self) -> int:
        return min(sum(self.blocks[b][1] for b in t) for t in self.tables)


def choose_num_blocks(n: int, max_distance: int, margin_bits: int = 2) -> int:
    """Fewest blocks whose narrowest table key has >= log2(n) + margin bits.

    With uniform hashes a bucket then holds ~2^-margin other rows on average, so candidate pairs
    stay O(n) per table while the number of tables C(B, d) stays as small as possible.
    """
    need = math.log2(max(n, 2)) + margin_bits
    for num_blocks in range(max_distance + 1, HASH_BITS + 1):
        if (HASH_BITS // num_blocks) * (num_blocks - max_distance) >= need:
            return num_blocks
    return HASH_BITS


def make_layout(max_distance: int, num_blocks: int) -> BandLayout:
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be in [0, 63], got {max_distance}")
    if num_blocks < max_distance + 1:
        raise ValueError(f"need at least max_distance+1={max_distance + 1} blocks, got {num_blocks}")
    widths = [HASH_BITS // num_blocks + (1 if i < HASH_BITS % num_blocks else 0)
              for i in range(num_blocks)]
    shifts = [HASH_BITS - sum(widths[: i + 1]) for i in range(num_blocks)]
    tables = tuple(itertools.combinations(range(num_blocks), num_blocks - max_distance))
    if len(tables) > MAX_TABLES:
        raise ValueError(f"{len(tables)} tables: too many (fewer blocks, or a smaller max_distance)")
    return BandLayout(max_distance, tuple(zip(shifts, widths)), tables)


def table_keys(hashes: np.ndarray, layout: BandLayout, table: int) -> np.ndarray:
    """Bucket keys of every hash in one table: the table id above `key_bits`, then the chosen
    blocks' bits. Keys of different tables never collide, so rows of many tables can share one
    shuffle partition (the Ray stage) and one `verified_pairs` call."""
    h = np.asarray(hashes, dtype=np.uint64)
    key = np.zeros(len(h), dtype=np.uint64)
    for b in layout.tables[table]:
        shift, width = layout.blocks[b]
        key = (key << np.uint64(width)) | ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1))
    return key | (np.uint64(table) << np.uint64(layout.key_bits))


def verified_pairs(keys: np.ndarray, hashes: np.ndarray, max_distance: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i != j, with keys[i] == keys[j] and popcount(h_i ^ h_j) <= max_distance.

    Rows are sorted by key; for offset o = 1, 2, ... the rows whose run still reaches o positions
    ahead are compared with that neighbour. Work and memory are O(rows + candidate pairs), and
    pairs are verified as they are generated, so a bucket never materialises its s^2 candidates.
    (A bucket of s *distinct* hashes still costs s^2/2 popcounts; callers collapse identical
    hashes first, which removes the degenerate case of many copies of one hash.)
    """
    keys = np.asarray(keys, dtype=np.uint64)
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(keys)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty
    idx_bits = int(n - 1).bit_length()
    # Packing (key, row) into one uint64 lets numpy's SIMD sort run on plain integers: 10M rows
    # sort in ~0.2 s here against ~1.3 s for argsort of the keys.
    key_bits = int(keys.max()).bit_length()
    if key_bits + idx_bits <= 64:
        packed = np.sort((keys << np.uint64(idx_bits)) | np.arange(n, dtype=np.uint64))
        sorted_keys = packed >> np.uint64(idx_bits)
        order = (packed & np.uint64((1 << idx_bits) - 1)).astype(np.int64)
    else:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    if not same.any():
        return empty, empty
    in_run = np.zeros(n, dtype=bool)  # keep only rows that share their bucket with another row
    in_run[1:] |= same
    in_run[:-1] |= same
    k = sorted_keys[in_run]
    rows = order[in_run]
    h = hashes[rows]
    out_a, out_b = [], []
    active = np.arange(len(k) - 1)
    offset = 1
    while len(active):
        active = active[active + offset < len(k)]
        active = active[k[active + offset] == k[active]]
        if not len(active):
            break
        close = np.bitwise_count(h[active] ^ h[active + offset]) <= max_distance
        out_a.append(rows[active[close]])
        out_b.append(rows[active[close] + offset])
        offset += 1
    if not out_a:
        return empty, empty
    return np.concatenate(out_a), np.concatenate(out_b)
