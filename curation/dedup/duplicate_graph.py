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

from curation.dedup.hamming_bands import (
    BandLayout,
    first_table_masks,
    in_first_table,
    table_keys,
    verified_pairs,
)
from curation.dedup.keep_policy import KeepPolicy, keepers
from curation.dedup.ray_ops import PART, part_of
from curation.dedup.union_find import components, star_edges

EXACT, NEAR = "exact_duplicate", "near_duplicate"


def _content_key(content_hash: pa.Array) -> np.ndarray:
    """First 60 bits of the hex sha1: a bucket key; equality is then checked on the full hash."""
    prefixes = pc.utf8_slice_codeunits(pc.cast(content_hash, pa.string()), 0, 15).to_pylist()
    return np.array([int(p, 16) if p else 0 for p in prefixes], dtype=np.uint64)


def band_rows(batch: pa.Table, layout: BandLayout, n_partitions: int, attrs: list[str]) -> pa.Table:
    """Rows of `batch` (with id, phash, content_hash, attrs) -> bucket rows for the shuffle.

    Only the exact rows carry the content hash (a 40-char sha1 on each of the ~C(B, d) band rows
    was ~40% of the bytes shuffled); band rows carry a null there."""
    n, n_tables = batch.num_rows, len(layout.tables)
    h = batch["phash"].to_numpy().astype(np.uint64)
    has_content = np.flatnonzero(pc.is_valid(batch["content_hash"]).to_numpy(zero_copy_only=False))
    content = batch["content_hash"].take(pa.array(has_content))  # no sha1, no exact-duplicate row
    buckets = np.concatenate([table_keys(h, layout, t) for t in range(n_tables)] + [_content_key(content)])
    kind = np.r_[np.zeros(n * n_tables, np.int8), np.ones(len(has_content), np.int8)]  # 1 = exact row
    # a pyarrow index array: ChunkedArray.take converts a numpy one first, which cost far more
    # than the take itself (docs/benchmarks.md, "Global stages")
    take = pa.array(np.r_[np.tile(np.arange(n), n_tables), has_content])
    cols = {PART: part_of(buckets ^ kind.astype(np.uint64), n_partitions), "kind": kind,
            "bucket": buckets}
    out = pa.table(cols)
    for name in ["id", "phash", *attrs]:
        out = out.append_column(name, batch[name].take(take))
    content_type = batch.schema.field("content_hash").type
    content = pa.chunked_array([pa.nulls(n * n_tables, content_type), *content.cast(content_type).chunks],
                               content_type)
    return out.add_column(out.column_names.index("phash") + 1, "content_hash", content)


def partition_edges(part: pa.Table, max_distance: int, attrs: list[str], layout: BandLayout | None = None
                    ) -> pa.Table:
    """Star edges of the duplicate components found inside one partition.

    With the stage's `layout`, a near pair is kept only in the first table whose key it shares
    (`first_table_masks`): the same pair is otherwise found in up to C(B - dist, B - d) tables,
    whose rows land in different partitions, and each partition sent its own edge for it (6.3M
    star edges for 1.1M duplicates at 10M rows and 20 partitions, against 2 per duplicate at 2
    partitions), so the driver's union grew with the partition count."""
    kind = part["kind"].to_numpy()
    found = []  # (reason, a, b): pairs of row positions in `part`
    for k, reason in ((1, EXACT), (0, NEAR)):
        rows = np.flatnonzero(kind == k)
        if len(rows) < 2:
            continue
        if k == 1:  # equal content hashes: one key per distinct sha1
            key = pc.dictionary_encode(part["content_hash"].take(pa.array(rows))).combine_chunks().indices
            a, b = _same_key_edges(key.to_numpy(zero_copy_only=False), rows)
        else:
            bucket = part["bucket"].to_numpy()[rows]
            h = np.asarray(part["phash"].to_numpy()[rows], np.uint64)
            a, b = verified_pairs(bucket, h, max_distance)  # identical hashes per bucket: s copies cost s
            if layout is not None:
                keep = _in_first_table(bucket[a], h[a] ^ h[b], layout)
                a, b = a[keep], b[keep]
            a, b = rows[a], rows[b]
        if len(a):
            found.append((reason, a, b))
    if not found:
        return edge_schema_empty(part, attrs)
    # Nodes are ids, numbered only for the rows in some pair: an image has several band rows
    # here, and Arrow's C++ dictionary encoding of every row's id was the costliest step
    # (np.unique over Python strings, before that, 80% of the time).
    touched = np.sort(np.concatenate([x for _, a, b in found for x in (a, b)]))
    touched = touched[np.r_[True, touched[1:] != touched[:-1]]]  # np.unique: hash-based, 4x slower
    encoded = pc.dictionary_encode(part["id"].take(pa.array(touched))).combine_chunks()
    ids, node_of = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    first_row = np.full(len(ids), len(part), dtype=np.int64)  # a row holding each node's attributes
    np.minimum.at(first_row, node_of, touched)
    tables = []
    for reason, a, b in found:
        node_a, node_b = node_of[np.searchsorted(touched, a)], node_of[np.searchsorted(touched, b)]
        roots, members = star_edges(components(len(ids), node_a, node_b))
        if not len(roots):
            continue
        cols = {"kind": pa.array([reason] * len(roots), pa.string()),
                "a_id": pc.cast(ids.take(pa.array(roots)), pa.string()),
                "b_id": pc.cast(ids.take(pa.array(members)), pa.string())}
        for c in attrs:
            cols["a_" + c] = part[c].take(pa.array(first_row[roots]))
            cols["b_" + c] = part[c].take(pa.array(first_row[members]))
        tables.append(pa.table(cols))
    return pa.concat_tables(tables) if tables else edge_schema_empty(part, attrs)


def edge_schema_empty(part: pa.Table, attrs: list[str]) -> pa.Table:
    fields = [pa.field("kind", pa.string()), pa.field("a_id", pa.string()), pa.field("b_id", pa.string())]
    for c in attrs:
        fields += [pa.field("a_" + c, part.schema.field(c).type), pa.field("b_" + c, part.schema.field(c).type)]
    return pa.schema(fields).empty_table()


def _same_key_edges(key: np.ndarray, node: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Link every node to the first node with the same key (keys held once give no edge)."""
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    a, b = node[first[inverse]], node
    linked = a != b
    return a[linked], b[linked]


def _in_first_table(bucket: np.ndarray, xor: np.ndarray, layout: BandLayout) -> np.ndarray:
    """Which pairs (their shared bucket key, the XOR of their hashes) are in the first table whose
    key they share; a key's table id sits above `key_bits` (`table_keys`)."""
    table = (bucket >> np.uint64(layout.key_bits)).astype(np.int64)
    keep = np.zeros(len(xor), dtype=bool)
    order = np.argsort(table, kind="stable")
    bounds = np.searchsorted(table[order], np.arange(len(layout.tables) + 1))
    for t in range(len(layout.tables)):
        sel = order[bounds[t]:bounds[t + 1]]
        keep[sel] = in_first_table(xor[sel], first_table_masks(layout, t))
    return keep


def resolve(edges: pa.Table, policy: KeepPolicy, attrs: list[str]) -> pa.Table:
    """Union of every partition's stars -> (id, dup_of, reject) for each duplicate row, sorted by id.

    Strings stay in Arrow: node numbers from its C++ dictionary encoding, not numpy arrays of
    Python strings (~4 µs per edge, the driver's bottleneck at millions of duplicates)."""
    empty = pa.table({"id": pa.array([], pa.string()), "dup_of": pa.array([], pa.string()),
                      "reject": pa.array([], pa.string())})
    if edges.num_rows == 0:
        return empty
    a_side = edges.select(["a_id", *["a_" + c for c in attrs]]).rename_columns(["id", *attrs])
    b_side = edges.select(["b_id", *["b_" + c for c in attrs]]).rename_columns(["id", *attrs])
    nodes = pa.concat_tables([a_side, b_side.cast(a_side.schema)])
    encoded = pc.dictionary_encode(pc.cast(nodes["id"], pa.string())).combine_chunks()
    uniq, end = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n, m = len(uniq), edges.num_rows
    first = np.full(n, len(end), dtype=np.int64)  # one row (its first) per node for the policy
    np.minimum.at(first, end, np.arange(len(end)))
    rank = policy.rank(nodes.take(pa.array(first)))
    a, b = end[:m], end[m:]
    ex = pc.equal(edges["kind"], EXACT).to_numpy(zero_copy_only=False)
    exact_keep = keepers(components(n, a[ex], b[ex]), rank)  # same bytes: one kept per sha1
    # near duplicates among exact keepers: an exact copy's near edges act for its keeper
    near_keep = keepers(components(n, exact_keep[a[~ex]], exact_keep[b[~ex]]), rank)
    is_exact = exact_keep != np.arange(n)
    dup = np.flatnonzero(is_exact | (near_keep != np.arange(n)))
    out = pa.table({"id": uniq.take(pa.array(dup)),
                    "dup_of": uniq.take(pa.array(np.where(is_exact, exact_keep, near_keep)[dup])),
                    "reject": pc.if_else(pa.array(is_exact[dup]), EXACT, NEAR)})
    return out.sort_by("id")
