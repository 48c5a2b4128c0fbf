"""The record: every column a stage may write, with its Arrow type, in one place.

A row is one input image. Stages add columns; nothing else in the code base invents a column
name or type. `curate stages` prints, for each stage, the columns it declares here.
"""

from __future__ import annotations

import pyarrow as pa

# Bookkeeping columns carried by every stage's Parquet parts.
ID = "id"  # stable: "<input_shard>-<index in shard>", survives reruns
INPUT_SHARD = "input_shard"
REJECT = "reject"  # null while the row is kept; else the reason
REJECT_STAGE = "reject_stage"
ERROR = "error"  # the exception message when a stage failed on this row (reject "error:<stage>")

CLIP_DIM_DEFAULT = 512

COLUMNS: dict[str, pa.DataType] = {
    ID: pa.string(),
    INPUT_SHARD: pa.string(),
    REJECT: pa.string(),
    REJECT_STAGE: pa.string(),
    ERROR: pa.string(),
    # ingest
    "source": pa.string(),  # path, URL or "tar://<tar>#<key>"
    "image": pa.binary(),  # the encoded bytes as fetched; only the ingest parts hold them
    "bytes": pa.int64(),
    "content_hash": pa.string(),  # sha1 of the bytes: exact duplicates
    "caption": pa.string(),  # from URL lists / tars when present
    # decode
    "width": pa.int32(),  # after EXIF orientation
    "height": pa.int32(),
    "format": pa.string(),  # PIL format name: JPEG, PNG, WEBP, ...
    "mode": pa.string(),  # PIL mode of the file: RGB, L, CMYK, RGBA, I;16 ...
    "orientation": pa.int8(),  # EXIF orientation tag, 1 when absent
    # detect
    "person_boxes": pa.list_(pa.list_(pa.float32(), 5)),  # x0,y0,x1,y1,score in original pixels
    "num_persons": pa.int32(),
    "max_person_short_side": pa.float32(),
    # headpose
    "head_yaw": pa.float32(),
    "head_pitch": pa.float32(),
    "head_roll": pa.float32(),
    "head_found": pa.bool_(),
    # embed
    "clip": pa.list_(pa.float16()),  # fixed size per run; see clip_type()
    # quality
    "aesthetic": pa.float32(),
    "realism": pa.float32(),
    # text
    "text_area": pa.float32(),
    "text_boxes": pa.list_(pa.list_(pa.float32(), 5)),  # x0,y0,x1,y1,score
    # phash / semdedup
    "phash": pa.uint64(),
    "dup_of": pa.string(),
    "semdup_of": pa.string(),
    # cluster / sample
    "cluster_l1": pa.int32(),
    "cluster_l2": pa.int32(),
    "cluster_l3": pa.int32(),
    "cluster_l4": pa.int32(),
    "cluster_distance": pa.float32(),  # distance to the level-1 centroid (closest-first sampling)
    "selected": pa.int32(),  # how many times the row is drawn (0 = not selected)
}

BOOKKEEPING = (ID, INPUT_SHARD, REJECT, REJECT_STAGE)


def clip_type(dim: int) -> pa.DataType:
    """CLIP vectors are stored as a fixed-size list so readers get a dense [N, D] array."""
    return pa.list_(pa.float16(), dim)


def arrow_type(column: str) -> pa.DataType:
    try:
        return COLUMNS[column]
    except KeyError:
        raise KeyError(f"column {column!r} is not declared in curation/schema.py") from None


def schema_for(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    return pa.schema([(c, arrow_type(c)) for c in columns])
