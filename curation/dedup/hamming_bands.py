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
BIG_BUCKET = 32  # buckets above this many rows get identical hashes collapsed before pairing
CHUNK = 1 << 18  # rows per cache-sized chunk: 2 MiB per uint64 temporary
_EMPTY = np.zeros(0, dtype=np.int64)


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


def choose_num_blocks(n: int, max_distance: int, margin_bits: float = 2) -> int:
    """Fewest blocks whose narrowest table key has >= log2(n) + margin bits.

    With uniform hashes a bucket then holds ~2^-margin other rows on average, so candidate pairs
    stay O(n) per table while the number of tables C(B, d) stays as small as possible. (Real
    pHashes are less uniform than that: their buckets are fuller.)
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


def _bit_runs(layout: BandLayout, table: int) -> list[tuple[int, int]]:
    """The table's blocks as (shift, width) runs of adjacent bits: blocks 2,3 are one run."""
    runs: list[list[int]] = []
    for b in layout.tables[table]:
        shift, width = layout.blocks[b]
        if runs and runs[-1][0] == shift + width:  # continues the previous (higher) run
            runs[-1] = [shift, runs[-1][1] + width]
        else:
            runs.append([shift, width])
    return [(sh, w) for sh, w in runs]


def first_table_masks(layout: BandLayout, table: int) -> list[int]:
    """Bit masks of the blocks a pair must *differ* on for `table` to be the first table (in
    layout order) whose key the pair shares: the blocks before the table's last block that are
    not in it. A pair agreeing on blocks A shares the key of every (B-d)-subset of A; keeping it
    only in the first one, A's B-d smallest blocks, reports each pair once instead of up to
    C(|A|, B-d) times (identical hashes: only in table 0, where they all share a bucket)."""
    blocks = layout.tables[table]
    return [((1 << w) - 1) << sh for j, (sh, w) in enumerate(layout.blocks)
            if j < blocks[-1] and j not in blocks]


def in_first_table(x: np.ndarray, masks: list[int]) -> np.ndarray:
    """Which XORs of pairs (h_a ^ h_b) differ on every mask of `first_table_masks`."""
    keep = np.ones(len(x), dtype=bool)
    for m in masks:
        keep &= (x & np.uint64(m)) != 0
    return keep


def table_keys(hashes: np.ndarray, layout: BandLayout, table: int) -> np.ndarray:
    """Bucket keys of every hash in one table: the table id above `key_bits`, then the chosen
    blocks' bits. Keys of different tables never collide, so rows of many tables can share one
    shuffle partition (the Ray stage) and one `verified_pairs` call."""
    h = np.asarray(hashes, dtype=np.uint64)
    key = np.zeros(len(h), dtype=np.uint64)
    part = np.empty_like(key)
    for shift, width in _bit_runs(layout, table):  # in place, one run of adjacent blocks at a time
        np.left_shift(key, np.uint64(width), out=key)
        np.right_shift(h, np.uint64(shift), out=part)
        np.bitwise_and(part, np.uint64((1 << width) - 1), out=part)
        np.bitwise_or(key, part, out=key)
    np.bitwise_or(key, np.uint64(table) << np.uint64(layout.key_bits), out=key)
    return key


def pairs_in_sorted(packed: np.ndarray, idx_bits: int, hashes: np.ndarray, max_distance: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Verified pairs among rows of equal key, from sorted packed (key, row) values (packing
    (key, row) into one uint64 lets numpy's SIMD sort run on plain integers: ~8x faster than an
    argsort of the keys)."""
    n = len(packed)
    same = []
    for start in range(0, max(n - 1, 0), CHUNK):  # chunked: no 80 MB temporaries at 10M rows
        seg = np.right_shift(packed[start:start + CHUNK + 1], np.uint64(idx_bits))
        same.append(np.flatnonzero(seg[1:] == seg[:-1]) + start)
    if not same or not sum(len(x) for x in same):
        return _EMPTY, _EMPTY
    same = np.concatenate(same)
    s = BIG_BUCKET - 1  # a run above BIG_BUCKET rows has BIG_BUCKET - 1 consecutive `same`
    if len(same) < s or not (same[s:] - same[:-s] == s).any():
        return _verify_adjacent(packed, same, idx_bits, hashes, max_distance)
    pos = _rows_in_runs(same)  # rows sharing their bucket: usually a tiny fraction
    k = np.right_shift(packed[pos], np.uint64(idx_bits))
    rows = (packed[pos] & np.uint64((1 << idx_bits) - 1)).astype(np.int64)
    return _verify_runs(k, rows, hashes, max_distance)


def verified_pairs(keys: np.ndarray, hashes: np.ndarray, max_distance: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i != j, with keys[i] == keys[j] and popcount(h_i ^ h_j) <= max_distance
    (pairs of identical hashes in big buckets come as stars, enough to connect them)."""
    keys = np.asarray(keys, dtype=np.uint64)
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(keys)
    if n < 2:
        return _EMPTY, _EMPTY
    idx_bits = int(n - 1).bit_length()
    if int(keys.max()).bit_length() + idx_bits <= 64:
        packed = np.left_shift(keys, np.uint64(idx_bits))
        np.bitwise_or(packed, np.arange(n, dtype=np.uint64), out=packed)
        packed.sort()
        return pairs_in_sorted(packed, idx_bits, hashes, max_distance)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if not len(same):
        return _EMPTY, _EMPTY
    pos = _rows_in_runs(same)
    return _verify_runs(sorted_keys[pos], order[pos], hashes, max_distance)


def _verify_adjacent(packed: np.ndarray, same: np.ndarray, idx_bits: int, hashes: np.ndarray,
                     max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """`_verify_runs` for buckets of <= BIG_BUCKET rows, straight from the sorted packed values:
    position p pairs with p + offset while the key holds. No compaction of the bucket rows
    first: with random 27-bit keys most shared buckets hold 2 rows, and at 10M rows they are 7%
    of all rows, so per-candidate overhead is what grew faster than n."""
    shift, mask = np.uint64(idx_bits), np.uint64((1 << idx_bits) - 1)
    out_a, out_b = [], []
    active, offset = same, 1
    # Full buckets (the phash stage's partitions at 10M rows: ~5 rows a bucket) have more
    # candidates than rows: one gather of the hashes into key order then makes every offset's
    # reads ascending instead of random over the whole array (16% less CPU there, 7% more at
    # 1M rows, where most rows share no bucket)
    rows = (packed & mask).astype(np.int64) if 2 * len(same) > len(packed) else None
    in_order = hashes[rows] if rows is not None else None
    while len(active):
        if rows is not None:
            hit = active[np.bitwise_count(in_order[active] ^ in_order[active + offset]) <= max_distance]
            out_a.append(rows[hit])
            out_b.append(rows[hit + offset])
        else:
            ra = (packed[active] & mask).astype(np.int64)
            rb = (packed[active + offset] & mask).astype(np.int64)
            close = np.bitwise_count(hashes[ra] ^ hashes[rb]) <= max_distance
            out_a.append(ra[close])
            out_b.append(rb[close])
        offset += 1
        active = active[active + offset < len(packed)]
        active = active[(packed[active + offset] >> shift) == (packed[active] >> shift)]
    return np.concatenate(out_a), np.concatenate(out_b)


def _verify_runs(k: np.ndarray, rows: np.ndarray, hashes: np.ndarray, max_distance: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within runs of equal k (k sorted), verified by popcount.

    For offset o = 1, 2, ... the rows whose run still reaches o positions ahead are compared with
    that neighbour. Work and memory are O(rows + candidate pairs), and pairs are verified as they
    are generated, so a bucket never materialises its s^2 candidates. Identical hashes inside a
    big bucket are linked to one representative first (s copies of one image cost s, not s^2);
    a bucket of s *distinct* hashes still costs s^2/2 popcounts.
    """
    h = hashes[rows]
    out_a, out_b = [], []
    run_start = np.r_[True, k[1:] != k[:-1]]
    run_len = np.diff(np.r_[np.flatnonzero(run_start), len(k)])
    if run_len.max() > BIG_BUCKET:  # collapse identical hashes in big buckets only
        big = np.repeat(run_len > BIG_BUCKET, run_len)
        a, b, keep = _collapse_identical(k[big], h[big], rows[big])
        out_a.append(a)
        out_b.append(b)
        big[np.flatnonzero(big)[keep]] = False  # representatives stay in the offset loop
        k, rows, h = k[~big], rows[~big], h[~big]
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
        return _EMPTY, _EMPTY
    return np.concatenate(out_a), np.concatenate(out_b)


def _rows_in_runs(same: np.ndarray) -> np.ndarray:
    """Sorted positions p with p in `same` or p-1 in `same` (`same` ascending). Merged by hand:
    np.union1d goes through a general unique, far slower on these already-sorted arrays
    (docs/benchmarks.md, "Global stages")."""
    pos = np.concatenate([same, same + 1])
    pos.sort()
    return pos[np.r_[True, pos[1:] != pos[:-1]]]


def _collapse_identical(k: np.ndarray, h: np.ndarray, rows: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rep rows, copy rows) linking equal (key, hash) rows to the first, and the positions of
    the representatives in the input."""
    order = np.lexsort((h, k))
    k, h, rows = k[order], h[order], rows[order]
    repeat = np.r_[False, (k[1:] == k[:-1]) & (h[1:] == h[:-1])]
    rep = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(k))))
    return rows[rep[repeat]], rows[repeat], order[~repeat]
