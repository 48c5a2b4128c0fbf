"""The phash stage's distributed dedup, as three pyarrow-in / pyarrow-out steps:

1. `band_rows` (per block): each hashed row becomes one row per band table (bucket key = the
   table's blocks of the pHash) plus one "exact" row keyed by its content hash; every row carries
   `_part` = bucket mod P, so one partition holds every bucket it needs whole.
2. `partition_edges` (per partition): exact duplicates by equal content hash, near duplicates by
   verified Hamming distance inside each bucket; the partition's components leave it as star
   edges (root, member), with the keep-policy attributes of both ends.
3. `resolve` (driver, small): union of all partitions' stars -> exact groups first, then near
   groups among the exact keepers -> a lookup (id, dup_of, reject) for the duplicates only.

Only duplicates reach the driver; rows without a duplicate never leave their partition.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.hamming_bands import BandLayout, table_keys, verified_pairs
from curation.dedup.keep_policy import KeepPolicy, keepers
from curation.dedup.ray_ops import PART, part_of
from curation.dedup.union_find import components, star_edges

EXACT, NEAR = "exact_duplicate", "near_duplicate"


def _content_key(content_hash: pa.Array) -> np.ndarray:
    """First 60 bits of the hex sha1: a bucket key; equality is then checked on the full hash."""
    prefixes = pc.utf8_slice_codeunits(pc.cast(content_hash, pa.string()), 0, 15).to_pylist()
    return np.array([int(p, 16) if p else 0 for p in prefixes], dtype=np.uint64)


def band_rows(batch: pa.Table, layout: BandLayout, n_partitions: int, attrs: list[str]) -> pa.Table:
    """Rows of `batch` (with id, phash, content_hash, attrs) -> bucket rows for the shuffle."""
    n, n_tables = batch.num_rows, len(layout.tables)
    h = batch["phash"].to_numpy().astype(np.uint64)
    has_content = np.flatnonzero(pc.is_valid(batch["content_hash"]).to_numpy(zero_copy_only=False))
    content = batch["content_hash"].take(pa.array(has_content))  # no sha1, no exact-duplicate row
    buckets = np.concatenate([table_keys(h, layout, t) for t in range(n_tables)] + [_content_key(content)])
    kind = np.r_[np.zeros(n * n_tables, np.int8), np.ones(len(has_content), np.int8)]  # 1 = exact row
    take = np.r_[np.tile(np.arange(n), n_tables), has_content]
    cols = {PART: part_of(buckets ^ kind.astype(np.uint64), n_partitions), "kind": kind,
            "bucket": buckets}
    out = pa.table(cols)
    for name in ["id", "phash", "content_hash", *attrs]:
        out = out.append_column(name, batch[name].take(take))
    return out


def partition_edges(part: pa.Table, max_distance: int, attrs: list[str]) -> pa.Table:
    """Star edges of the duplicate components found inside one partition."""
    # Arrow's hash-based dictionary encoding numbers the ids in C++ (np.unique over Python strings
    # was 80% of this function's time)
    encoded = pc.dictionary_encode(part["id"]).combine_chunks()
    ids, node = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    kind = part["kind"].to_numpy()
    out = []
    for k, reason in ((1, EXACT), (0, NEAR)):
        rows = np.nonzero(kind == k)[0]
        if len(rows) < 2:
            continue
        if k == 1:  # equal content hashes: one key per distinct sha1
            key = pc.dictionary_encode(part["content_hash"].take(rows)).combine_chunks().indices
            a, b = _same_key_edges(key.to_numpy(zero_copy_only=False), node[rows])
        else:
            a, b = _near_edges(part["bucket"].to_numpy()[rows], part["phash"].to_numpy()[rows].astype(np.uint64),
                               node[rows], max_distance)
        if len(a):
            roots, members = star_edges(components(len(ids), a, b))
            out.append((reason, roots, members))
    first_row = np.full(len(ids), len(node), dtype=np.int64)  # a row holding each node's attributes
    np.minimum.at(first_row, node, np.arange(len(node)))
    tables = []
    for reason, roots, members in out:
        cols = {"kind": pa.array([reason] * len(roots), pa.string()),
                "a_id": pc.cast(ids.take(pa.array(roots)), pa.string()),
                "b_id": pc.cast(ids.take(pa.array(members)), pa.string())}
        for c in attrs:
            cols["a_" + c] = part[c].take(first_row[roots])
            cols["b_" + c] = part[c].take(first_row[members])
        tables.append(pa.table(cols))
    if not tables:
        return edge_schema_empty(part, attrs)
    return pa.concat_tables(tables)


def edge_schema_empty(part: pa.Table, attrs: list[str]) -> pa.Table:
    fields = [pa.field("kind", pa.string()), pa.field("a_id", pa.string()), pa.field("b_id", pa.string())]
    for c in attrs:
        fields += [pa.field("a_" + c, part.schema.field(c).type), pa.field("b_" + c, part.schema.field(c).type)]
    return pa.schema(fields).empty_table()


def _same_key_edges(key: np.ndarray, node: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Link every node to the first node with the same key."""
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return node[first[inverse]], node


def _near_edges(bucket: np.ndarray, h: np.ndarray, node: np.ndarray, max_distance: int
                ) -> tuple[np.ndarray, np.ndarray]:
    # verified_pairs collapses identical hashes inside a bucket itself: s copies cost s, not s^2
    a, b = verified_pairs(bucket, h, max_distance)
    return node[a], node[b]


def resolve(edges: pa.Table, policy: KeepPolicy, attrs: list[str]) -> pa.Table:
    """Union of every partition's stars -> (id, dup_of, reject) for each duplicate row."""
    empty = pa.table({"id": pa.array([], pa.string()), "dup_of": pa.array([], pa.string()),
                      "reject": pa.array([], pa.string())})
    if edges.num_rows == 0:
        return empty
    a_side = edges.select(["a_id", *["a_" + c for c in attrs]]).rename_columns(["id", *attrs])
    b_side = edges.select(["b_id", *["b_" + c for c in attrs]]).rename_columns(["id", *attrs])
    nodes = pa.concat_tables([a_side, b_side.cast(a_side.schema)])
    ids = np.asarray(nodes["id"].to_pylist(), dtype=str)
    uniq, first = np.unique(ids, return_index=True)
    nodes = nodes.take(first)  # one row per node, sorted by id
    rank = policy.rank(nodes)
    kind = np.asarray(edges["kind"].to_pylist(), dtype=str)
    a = np.searchsorted(uniq, np.asarray(edges["a_id"].to_pylist(), dtype=str))
    b = np.searchsorted(uniq, np.asarray(edges["b_id"].to_pylist(), dtype=str))
    n = len(uniq)
    ex = kind == EXACT
    exact_keep = keepers(components(n, a[ex], b[ex]), rank)  # same bytes: one kept per sha1
    # near duplicates among exact keepers: an exact copy's near edges act for its keeper
    near_keep = keepers(components(n, exact_keep[a[~ex]], exact_keep[b[~ex]]), rank)
    reject = np.where(exact_keep != np.arange(n), EXACT, np.where(near_keep != np.arange(n), NEAR, ""))
    dup_of = np.where(reject == EXACT, uniq[exact_keep], uniq[near_keep])
    dup = reject != ""
    return pa.table({"id": pa.array(uniq[dup]), "dup_of": pa.array(dup_of[dup]), "reject": pa.array(reject[dup])})
