"""The dedup algorithms on their own (no Ray): banding against brute force, components, keep
policy, SemDeDup groups, and the phash shuffle steps run by hand."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from scipy.sparse.csgraph import connected_components

from curation.dedup.duplicate_graph import band_rows, partition_edges, resolve
from curation.dedup.hamming_bands import (
    BIG_BUCKET,
    choose_num_blocks,
    first_table_masks,
    make_layout,
    table_keys,
    verified_pairs,
)
from curation.dedup.keep_policy import KeepPolicy, keepers
from curation.dedup.near_duplicates import (
    chunk_cuts,
    components_of_touched,
    group_near_duplicates,
    grouped_by_lead,
    near_duplicate_pairs,
)
from curation.dedup.perceptual_hash import phash_many
from curation.dedup.semantic import cluster_keepers, semdedup, similar_groups
from curation.dedup.union_find import components, components_of_keys, star_edges


def planted_hashes(n: int, n_dups: int, max_flips: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    dups = base[rng.integers(0, n, n_dups)].copy()
    for i, flips in enumerate(rng.integers(0, max_flips + 1, n_dups)):
        for bit in rng.choice(64, flips, replace=False):
            dups[i] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, dups])


def brute_force_labels(h: np.ndarray, d: int) -> np.ndarray:
    close = np.bitwise_count(h[:, None] ^ h[None, :]) <= d
    return connected_components(close.astype(np.int8), directed=False)[1]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


@pytest.mark.parametrize("d", [0, 1, 3, 4, 6])
@pytest.mark.parametrize("num_blocks", [None, "minimal"])
def test_banding_finds_exactly_the_brute_force_groups(d, num_blocks):
    h = planted_hashes(1500, 700, max_flips=d + 3, seed=d)
    # "minimal" = d+1 blocks: the widest buckets, so the in-bucket verification is exercised
    blocks = d + 1 if num_blocks == "minimal" else None
    assert same_partition(group_near_duplicates(h, d, blocks), brute_force_labels(h, d))


def test_layout_pigeonhole_and_sizes():
    layout = make_layout(4, 7)
    assert len(layout.tables) == 35 and all(len(t) == 3 for t in layout.tables)
    assert sum(w for _, w in layout.blocks) == 64 and layout.min_key_bits >= 27
    # wide enough keys that a uniform bucket holds < 1 other row, as few tables as possible
    assert choose_num_blocks(1_000_000, 4) == 7 and choose_num_blocks(4_000_000_000, 4) == 9
    with pytest.raises(ValueError):
        make_layout(4, 4)  # fewer than d+1 blocks would miss pairs
    keys = [table_keys(np.array([0], np.uint64), layout, t)[0] for t in range(35)]
    assert len(set(keys)) == 35  # the same hash gets a different key in every table


def test_verified_pairs_in_a_crowded_bucket_and_identical_hashes():
    h = np.array([0b0, 0b1, 0b11, 0b111, 0b1111111], dtype=np.uint64)
    a, b = verified_pairs(np.zeros(5, np.uint64), h, 2)
    pairs = {tuple(sorted(p)) for p in zip(a.tolist(), b.tolist())}
    assert pairs == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    labels = group_near_duplicates(np.array([7, 7, 7, 2**40], dtype=np.uint64), 0)
    assert labels[0] == labels[1] == labels[2] != labels[3]


def test_components_are_canonical_and_star_edges_preserve_them():
    labels = components(6, np.array([4, 1, 5]), np.array([2, 3, 4]))
    assert labels.tolist() == [0, 1, 2, 1, 2, 2]
    roots, members = star_edges(labels)
    assert components(6, roots, members).tolist() == labels.tolist()
    nodes, roots = components_of_keys(np.array(["c", "x"]), np.array(["b", "c"]))
    assert dict(zip(nodes, roots)) == {"b": "b", "c": "b", "x": "b"}


def test_keep_policy_order_missing_columns_and_nulls():
    t = pa.table({"id": ["a", "b", "c", "d"], "width": [100, 200, 200, 200], "height": [100, 100, 100, 100],
                  "aesthetic": [9.0, 5.0, 6.0, None]})
    rank = KeepPolicy().rank(t)
    assert np.argsort(rank).tolist() == [2, 1, 3, 0]  # resolution, then aesthetic (null last), then id
    no_aesthetic = KeepPolicy().rank(t.drop_columns(["aesthetic"]))
    assert np.argsort(no_aesthetic).tolist() == [1, 2, 3, 0]  # column skipped, id decides
    assert np.argsort(KeepPolicy(("-id",)).rank(t)).tolist() == [3, 2, 1, 0]
    assert keepers(np.array([5, 5, 7, 5]), rank).tolist() == [1, 1, 2, 1]


def test_phash_of_bad_bytes_is_flagged_not_raised():
    _, ok = phash_many([b"not an image", None, b""])
    assert not ok.any()


def test_semantic_groups_keep_exactly_one_per_group():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 32))
    copies = np.repeat(base[:40], 3, axis=0) + 0.01 * rng.standard_normal((120, 32))  # 40 groups of 4
    x = np.concatenate([base, copies]).astype(np.float16)
    group = np.r_[np.arange(300), np.repeat(np.arange(40), 3)]
    kept = semdedup(x, np.arange(len(x)), n_clusters=6, eps=0.02, seed=0)
    for g in range(300):
        members = np.nonzero(group == g)[0]
        assert len(set(kept[members].tolist())) == 1  # one group ...
        assert (kept[members] == members).sum() == 1  # ... with exactly one kept (not none)
    # splitting into parts of <= 60 rows and query blocks of 50 pairs finds the same groups
    split = cluster_keepers(x, np.arange(len(x)), 0.02, max_cluster_size=60)
    assert (split == kept).mean() > 0.97
    small_budget = similar_groups(x[:400], 0.02, pair_budget=50)
    assert same_partition(small_budget, similar_groups(x[:400], 0.02))


def test_phash_shuffle_steps_exact_first_then_near():
    """band_rows -> partition_edges -> resolve by hand, on 2 partitions."""
    h = np.array([0, 0b11, 0b11, 0xFFFF << 48, 0b1111], dtype=np.uint64)  # row 2 is a byte copy of row 1
    t = pa.table({"id": ["r0", "r1", "r2", "r3", "r4"], "phash": pa.array(h, pa.uint64()),
                  "content_hash": [hashlib.sha1(s).hexdigest() for s in (b"0", b"1", b"1", b"3", b"4")],
                  "width": [10, 20, 20, 10, 50], "height": [10, 20, 20, 10, 50]})
    layout, attrs = make_layout(2, 3), ["width", "height"]
    bands = band_rows(t, layout, 2, attrs)
    assert bands.num_rows == 5 * (len(layout.tables) + 1)
    parts = [partition_edges(bands.filter(pa.compute.equal(bands["_part"], p)), 2, attrs) for p in (0, 1)]
    resolved = resolve(pa.concat_tables(parts), KeepPolicy(), attrs).to_pylist()
    lookup = {r["id"]: (r["dup_of"], r["reject"]) for r in resolved}
    # r4 (largest) keeps the near group {r0, r1, r4}; r2 is an exact copy of r1 (id order)
    assert lookup == {"r0": ("r4", "near_duplicate"), "r1": ("r4", "near_duplicate"),
                      "r2": ("r1", "exact_duplicate")}


def test_many_copies_of_one_hash_in_one_bucket():
    """A bucket above BIG_BUCKET rows collapses identical hashes first; groups stay exact."""
    rng = np.random.default_rng(3)
    flipped = np.uint64(12345) ^ (np.uint64(1) << rng.integers(0, 64, 300).astype(np.uint64))
    h = np.concatenate([np.full(500, 12345, np.uint64), flipped, rng.integers(0, 2**63, 200, dtype=np.uint64)])
    for d in (1, 3):
        assert same_partition(group_near_duplicates(h, d, d + 1), brute_force_labels(h, d))


def test_rows_without_content_hash_are_never_exact_duplicates():
    t = pa.table({"id": ["a", "b", "c"], "phash": pa.array([1, 2**40, 2**50], pa.uint64()),
                  "content_hash": pa.array([None, None, "ab" * 20], pa.string()),
                  "width": [1, 1, 1], "height": [1, 1, 1]})
    layout, attrs = make_layout(1, 2), ["width", "height"]
    bands = band_rows(t, layout, 1, attrs)
    assert bands.num_rows == 3 * len(layout.tables) + 1
    assert resolve(partition_edges(bands, 1, attrs), KeepPolicy(), attrs).num_rows == 0


@pytest.mark.parametrize("d", [1, 4])
def test_tiny_chunks_and_input_blocks_give_the_brute_force_pairs(d):
    """Regrouping in input blocks of 97 rows and chunks of ~50 rows (chunk edges inside groups'
    runs, groups bigger than a chunk) finds every pair within d once, and only those."""
    h = planted_hashes(1200, 600, max_flips=d + 2, seed=10 + d)
    h[:40] = h[0]  # 40 identical hashes: a bucket above BIG_BUCKET in every table
    a, b = near_duplicate_pairs(h, d, d + 2, chunk=50, block=97)
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}
    assert len(pairs) == len(a)  # each pair once: only in the first table sharing its key
    assert all(np.bitwise_count(h[x] ^ h[y]) <= d for x, y in pairs)
    close = np.bitwise_count(h[:, None] ^ h[None, :]) <= d
    assert same_partition(components(len(h), a, b), brute_force_labels(h, d))
    assert (close.sum() - len(h)) // 2 >= len(pairs)  # identical rows come as a star, not a clique


def test_grouped_by_lead_and_chunk_cuts():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    grouped, rows, counts = grouped_by_lead(h, 50, 14, block=300)  # bits 50..63, top 14
    assert counts.shape == (4, 1 << 14) and counts.sum() == 1000
    assert (h[rows] == grouped).all() and sorted(rows.tolist()) == list(range(1000))
    for i in range(4):  # grouped by value inside each input block, rows in order within a value
        part, part_rows = grouped[300 * i:300 * (i + 1)] >> np.uint64(50), rows[300 * i:300 * (i + 1)]
        assert (np.diff(part.astype(np.int64)) >= 0).all()
        assert (np.diff(part_rows)[np.diff(part.astype(np.int64)) == 0] > 0).all()
    cuts = chunk_cuts(np.array([5, 0, 30, 2, 2, 2, 40, 1]), 10)
    assert cuts[0] == 0 and cuts[-1] == 8 and (np.diff(cuts) > 0).all()
    assert cuts.tolist() == [0, 3, 6, 7, 8]  # a group is never split; big groups stand alone


def test_first_table_masks_pick_one_table_per_pair():
    layout = make_layout(4, 7)
    assert first_table_masks(layout, 0) == []  # table (0, 1, 2): identical hashes live here
    rng = np.random.default_rng(2)
    for x in rng.integers(0, 2**64, 200, dtype=np.uint64):
        x = x & ~np.uint64(sum(((1 << w) - 1) << sh for sh, w in layout.blocks[:: 2]))
        agree = [j for j, (sh, w) in enumerate(layout.blocks) if not (int(x) >> sh) & ((1 << w) - 1)]
        firsts = [t for t, blocks in enumerate(layout.tables) if set(blocks) <= set(agree)
                  and all(int(x) & m for m in first_table_masks(layout, t))]
        assert [layout.tables[t] for t in firsts] == [tuple(agree[:3])]


@pytest.mark.parametrize("size", [BIG_BUCKET - 1, BIG_BUCKET, BIG_BUCKET + 1])
def test_buckets_around_big_bucket_size(size):
    """Buckets up to BIG_BUCKET rows are verified straight from the sorted keys; bigger ones
    collapse identical hashes first. Both give the brute-force groups."""
    rng = np.random.default_rng(size)
    h = np.uint64(77) ^ (np.uint64(1) << rng.integers(40, 64, size).astype(np.uint64))
    h[: size // 3] = 77  # some identical, some 2 bits apart, all sharing the low-bit buckets
    assert same_partition(group_near_duplicates(h, 1, 2), brute_force_labels(h, 1))


def test_no_rows_and_one_row():
    assert group_near_duplicates(np.zeros(0, np.uint64), 4).tolist() == []
    assert group_near_duplicates(np.array([5], np.uint64), 4).tolist() == [0]


def test_components_of_touched_matches_components():
    a, b = np.array([9, 3, 7, 3]), np.array([4, 9, 1, 3])
    assert components_of_touched(12, a, b).tolist() == components(12, a, b).tolist()
