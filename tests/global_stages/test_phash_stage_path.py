"""The phash stage's own dedup path (band_rows per batch -> rows split by `_part` -> partition_edges
per partition -> resolve), run by hand without Ray, against brute force: the groups, the exact
copies and the kept row of every group."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_dedup_algorithms import brute_force_labels, planted_hashes, same_partition

from curation.dedup.duplicate_graph import partition_edges, resolve
from curation.dedup.hamming_bands import make_layout
from curation.dedup.keep_policy import KeepPolicy
from curation.stages.phash import PhashConfig, _bands_of_hashed, band_plan

pytestmark = pytest.mark.timeout(120)
ATTRS = ["width", "height"]


def hashed_rows(d: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Planted near duplicates, 40 copies of one hash (a big bucket in every table), byte copies
    (same sha1 and phash) and a row without a content hash; rows shaped like the hash cache."""
    rng = np.random.default_rng(seed)
    h = planted_hashes(900, 500, max_flips=d + 2, seed=seed)
    h[:40] = h[0]
    content = np.arange(len(h))
    copies = rng.integers(0, len(h), 60)
    h, content = np.r_[h, h[copies]], np.r_[content, copies]
    sha = [hashlib.sha1(str(c).encode()).hexdigest() for c in content]
    sha[5] = None
    n = len(h)
    size = rng.integers(50, 400, len(h))
    table = pa.table({"id": [f"r{i:05d}" for i in range(n)], "input_shard": ["s0"] * n,
                      "phash": pa.array(h, pa.uint64()), "phash_ok": np.ones(n, bool),
                      "content_hash": pa.array(sha, pa.string()),
                      "width": size[content].astype(np.int32), "height": np.full(n, 100, np.int32)})
    return table, content


def stage_path(table: pa.Table, layout, n_parts: int, d: int, batch: int, with_layout: bool = True
               ) -> tuple[pa.Table, int]:
    """The stage's functions in-process; returns resolve's lookup and the star edges sent."""
    bands = pa.concat_tables([_bands_of_hashed(table.slice(s, batch), layout=layout, n_partitions=n_parts,
                                               attrs=ATTRS) for s in range(0, table.num_rows, batch)])
    edges = [partition_edges(bands.filter(pc.equal(bands["_part"], p)), d, ATTRS,
                             layout=layout if with_layout else None) for p in range(n_parts)]
    edges = pa.concat_tables(edges)
    return resolve(edges, KeepPolicy(), ATTRS), edges.num_rows


def labels_of(table: pa.Table, lookup: pa.Table) -> np.ndarray:
    """Row -> the row its group keeps (two hops: an exact copy's keeper may be a near dup)."""
    pos = {i: k for k, i in enumerate(table["id"].to_pylist())}
    kept = np.arange(table.num_rows)
    for r in lookup.to_pylist():
        kept[pos[r["id"]]] = pos[r["dup_of"]]
    return kept[kept]


@pytest.mark.parametrize("d,blocks,n_parts", [(1, None, 3), (3, 4, 5), (4, None, 7), (4, 5, 2)])
def test_stage_path_finds_the_brute_force_groups_and_keeps_the_best(d, blocks, n_parts):
    table, _ = hashed_rows(d, seed=d + n_parts)
    layout = make_layout(d, blocks) if blocks else band_plan(table.num_rows, PhashConfig(max_distance=d), 2)[0]
    lookup, n_edges = stage_path(table, layout, n_parts, d, batch=333)
    kept = labels_of(table, lookup)
    h = table["phash"].to_numpy()
    truth = brute_force_labels(h, d)
    assert same_partition(kept, truth)
    rank = KeepPolicy().rank(table)
    for g in np.unique(truth):  # the kept row is the group's best by the policy, and is kept
        members = np.flatnonzero(truth == g)
        assert (kept[members] == members[np.argmin(rank[members])]).all()
    reject = dict(zip(lookup["id"].to_pylist(), lookup["reject"].to_pylist()))
    ids, sha = table["id"].to_pylist(), table["content_hash"].to_pylist()
    by_sha: dict[str, list[int]] = {}
    for i, c in enumerate(sha):
        if c is not None:
            by_sha.setdefault(c, []).append(i)
    byte_groups = [m for m in by_sha.values() if len(m) > 1]
    assert len(byte_groups) > 40
    for members in byte_groups:  # same bytes: all but the best are exact duplicates of it
        best = min(members, key=lambda j: rank[j])
        assert [reject.get(ids[j]) == "exact_duplicate" for j in members] == [j != best for j in members]
    assert ids[5] not in reject or reject[ids[5]] == "near_duplicate"  # no sha1: never exact
    # the first-table rule only drops repeats of the same pair: same lookup, fewer edges
    unfiltered, more_edges = stage_path(table, layout, n_parts, d, batch=333, with_layout=False)
    assert unfiltered.equals(lookup) and n_edges < more_edges


def test_band_rows_carry_content_hash_on_exact_rows_only():
    table, _ = hashed_rows(2, seed=0)
    layout = make_layout(2, 4)
    bands = _bands_of_hashed(table, layout=layout, n_partitions=3, attrs=ATTRS)
    exact = pc.equal(bands["kind"], 1)
    assert pc.sum(exact).as_py() == table.num_rows - 1  # one row without sha1
    assert bands.filter(pc.invert(exact))["content_hash"].null_count == table.num_rows * len(layout.tables)
    assert bands.filter(exact)["content_hash"].null_count == 0


def test_keep_policy_ranks_strings_with_nulls_last_either_way():
    t = pa.table({"id": ["b", "a", "c"], "tag": pa.array(["x", None, "y"])})
    assert np.argsort(KeepPolicy(("tag",)).rank(t)).tolist() == [0, 2, 1]
    assert np.argsort(KeepPolicy(("-tag",)).rank(t)).tolist() == [2, 0, 1]
    assert np.argsort(KeepPolicy(("-id",)).rank(t)).tolist() == [2, 0, 1]
