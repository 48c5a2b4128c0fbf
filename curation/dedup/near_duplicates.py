"""Near-duplicate groups of 64-bit hashes on one machine: banded pairs -> components.

This is the algorithm the `phash` stage distributes and what `bench/bench_phash_scale.py` times.
The `phash` stage shuffles band rows to partitions by bucket key; here the same idea keeps the
work in the CPU cache, which is what makes 10M rows cost ~10x 1M rows rather than ~14x:

1. Tables are grouped by their *lead* (first) block. A pair sharing the key of any such table
   shares the lead block's bits, so rows grouped by the lead block's value never need to meet
   rows of another value. There are only d+1 lead blocks (5 for d = 4), so rows are regrouped
   5 times instead of every one of the 35 tables sorting all n rows.
2. Regrouping is done per input block of BLOCK rows: a stable argsort of the lead block's value
   (<= 16 bits: numpy radix-sorts those in O(n)) and a gather inside the block. A chunk is then
   its groups' runs copied from every input block: sequential copies, no random reads over n.
3. Chunks hold ~CHUNK rows and end at value boundaries. Each chunk's hashes
   (<= 1 MiB) stay in cache while every table of that lead block sorts its keys and verifies its
   candidates there. Before, each table sorted 80 MB at 10M rows and verified candidates by
   random reads into the 80 MB hash array: those two parts scaled 12x and 21x.
4. A pair is kept only in the first table whose key it shares (a check on the XOR of its two
   hashes), so each pair comes once, not up to 20 times; components then run on the rows that
   are in some pair only. Both parts do random access over n rows, which scaled ~20x.

Memory: the hashes, one regrouped copy with its row order (3 x 8 B per row) and the pairs.
"""

from __future__ import annotations

import itertools

import numpy as np

from curation.dedup.hamming_bands import (
    BandLayout,
    choose_num_blocks,
    first_table_masks,
    in_first_table,
    make_layout,
    table_keys,
    verified_pairs,
)
from curation.dedup.union_find import components

CHUNK = 1 << 16  # rows per in-cache chunk: 512 KiB of hashes, 512 KiB of packed keys
BLOCK = 1 << 18  # input rows grouped at a time: 2 MiB of hashes plus their order


def lead_groups(layout: BandLayout) -> dict[int, list[int]]:
    """Table indices by their first block (layout.tables are ascending block tuples)."""
    groups: dict[int, list[int]] = {}
    for t, blocks in enumerate(layout.tables):
        groups.setdefault(blocks[0], []).append(t)
    return groups


def grouped_by_lead(h: np.ndarray, shift: int, width: int, block: int = BLOCK
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by the top <= 16 bits of one block, a cache-sized input block at a time.

    Returns the hashes and row ids in that order and the rows per (input block, group). Rows of
    group g form one contiguous run inside every input block. Grouping the whole array at once
    costs a random read per row at 10M (80 MB, out of cache): that part scaled 17-21x.
    """
    bits = min(width, 16)
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64(shift + width - bits)
    dtype = np.uint8 if bits <= 8 else np.uint16  # numpy radix-sorts <= 16-bit ints: O(n)
    grouped, rows = np.empty_like(h), np.empty(len(h), dtype=np.int64)
    counts = []
    for start in range(0, len(h), block):
        hb = h[start:start + block]
        value = ((hb >> shift) & mask).astype(dtype)
        order = np.argsort(value, kind="stable")
        grouped[start:start + len(hb)] = hb[order]
        rows[start:start + len(hb)] = order + start
        counts.append(np.bincount(value, minlength=1 << bits))
    return grouped, rows, np.array(counts).reshape(-1, 1 << bits)


def chunk_cuts(group_rows: np.ndarray, chunk: int) -> np.ndarray:
    """Group indices 0 = c0 < c1 < ... = G such that groups [c_i, c_i+1) hold ~`chunk` rows; a
    group is never split (a group above `chunk` rows makes one bigger chunk)."""
    ends = np.cumsum(group_rows)
    cuts = np.searchsorted(ends, np.arange(chunk, int(ends[-1]), chunk), side="left") + 1
    return np.unique(np.r_[0, cuts, len(ends)])


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, num_blocks: int | None = None,
                         chunk: int = CHUNK, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows whose hashes are within `max_distance` - enough of them to connect every
    group (identical hashes in big buckets come as a star), each pair once: in the first table
    whose key it shares. `chunk` and `block` only change speed, never the pairs' components."""
    h = np.asarray(hashes, dtype=np.uint64)
    layout = make_layout(max_distance, num_blocks or choose_num_blocks(len(h), max_distance))
    found_a, found_b = [], []
    if len(h) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    for lead, table_ids in lead_groups(layout).items():
        tables = [(t, first_table_masks(layout, t)) for t in table_ids]
        grouped, rows, counts = grouped_by_lead(h, *layout.blocks[lead], block=block)
        offsets = np.c_[np.zeros(len(counts), np.int64), np.cumsum(counts, axis=1)]
        offsets += np.arange(len(counts))[:, None] * block  # row offsets within `grouped`
        cuts = chunk_cuts(counts.sum(axis=0), chunk).tolist()
        for g0, g1 in itertools.pairwise(cuts):
            pieces = [slice(s, e) for s, e in zip(offsets[:, g0].tolist(), offsets[:, g1].tolist())]
            hc = np.concatenate([grouped[p] for p in pieces])
            if len(hc) < 2:
                continue
            rc = None
            for table, masks in tables:  # every key and candidate check stays in this chunk
                a, b = verified_pairs(table_keys(hc, layout, table), hc, max_distance)
                keep = in_first_table(hc[a] ^ hc[b], masks)
                if keep.any():
                    rc = np.concatenate([rows[p] for p in pieces]) if rc is None else rc
                    found_a.append(rc[a[keep]])
                    found_b.append(rc[b[keep]])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_a), np.concatenate(found_b)


def group_near_duplicates(hashes: np.ndarray, max_distance: int, num_blocks: int | None = None
                          ) -> np.ndarray:
    """Group label per row: rows whose hashes chain within `max_distance` share a label (the
    smallest row index of the group). Identical hashes are collapsed inside each bucket by
    `verified_pairs`, so a hash repeated a million times costs a million, not 10^12. (No global
    np.unique first: its argsort was 10% of the time at 10M rows.)"""
    h = np.asarray(hashes, dtype=np.uint64)
    a, b = near_duplicate_pairs(h, max_distance, num_blocks)
    return components_of_touched(len(h), a, b)


def components_of_touched(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`components(n, a, b)`, run on the rows that appear in a pair only (~20% of the rows in the
    benchmark): its CSR build and graph walk over all n rows ran out of cache at 10M rows.
    Compact ids keep row order, so the smallest compact id is the smallest row."""
    touched = np.zeros(n, dtype=bool)
    touched[a] = True
    touched[b] = True
    nodes = np.flatnonzero(touched)
    ids = np.cumsum(touched, dtype=np.int32 if n < 2**31 else np.int64) - 1
    labels = np.arange(n, dtype=np.int64)
    labels[nodes] = nodes[components(len(nodes), ids[a], ids[b])]
    return labels
