"""Which rows the report shows as thumbnails, and the thumbnails themselves (JPEG data URIs).

Choices are seeded, so the same run gives the same report. Thumbnails are decoded at reduced size
(PIL draft) and capped in pixels: a crawl holds decompression bombs and broken files on purpose,
and those get a text tile instead of an image.
"""

from __future__ import annotations

import base64
import io
import random
from collections import defaultdict
from dataclasses import dataclass

import pyarrow.compute as pc

from curation.report.data import RunData
from curation.schema import ID, REJECT

THUMB_PX = 160
MAX_PREVIEW_PIXELS = 50_000_000  # above this a "preview" is a decompression bomb's payload


@dataclass
class Tile:
    id: str
    caption: str  # why the row is here: its reject reason, cluster, or duplicate role
    uri: str | None = None  # data:image/jpeg;base64,...; None when the bytes do not decode
    problem: str = ""


@dataclass
class Gallery:
    title: str
    note: str
    tiles: list[Tile]


def thumbnail_uri(data: bytes) -> str | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PREVIEW_PIXELS:
                return None
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG DCT scaling: no full-size decode
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA").convert("RGB") if "A" in im.mode else im.convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - any undecodable file is shown as text, never breaks the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _sample(items: list, k: int, seed: str) -> list:
    items = sorted(items)
    return items if len(items) <= k else sorted(random.Random(seed).sample(items, k))


def choose(run: RunData, per_group: int = 8, kept: int = 24, max_clusters: int = 12,
           max_dup_groups: int = 10) -> list[Gallery]:
    """Galleries as (title, note, tiles without pixels); `fill` adds the thumbnails."""
    rows = run.rows
    ids = rows.column(ID).to_pylist()
    reasons = rows.column(REJECT).to_pylist()
    galleries = []
    kept_ids = [i for i, r in zip(ids, reasons) if r is None]
    galleries.append(Gallery("Kept", f"{min(kept, len(kept_ids))} of {len(kept_ids)} kept images, at random",
                             [Tile(i, "kept") for i in _sample(kept_ids, kept, "kept")]))
    by_reason: dict[str, list[str]] = defaultdict(list)
    for i, r in zip(ids, reasons):
        if r is not None:
            by_reason[r].append(i)
    for reason in sorted(by_reason):
        chosen = _sample(by_reason[reason], per_group, reason)
        galleries.append(Gallery(f"Rejected: {reason}", f"{len(chosen)} of {len(by_reason[reason])}",
                                 [Tile(i, reason) for i in chosen]))
    if run.has("cluster_l1"):
        by_cluster: dict[int, list[str]] = defaultdict(list)
        for i, c in zip(ids, rows.column("cluster_l1").to_pylist()):
            if c is not None:
                by_cluster[c].append(i)
        largest = sorted(by_cluster, key=lambda c: (-len(by_cluster[c]), c))[:max_clusters]
        for c in largest:
            chosen = _sample(by_cluster[c], per_group, f"cluster{c}")
            galleries.append(Gallery(f"Cluster {c}", f"{len(chosen)} of {len(by_cluster[c])} images",
                                     [Tile(i, f"cluster {c}") for i in chosen]))
    return galleries


def duplicate_groups(run: RunData, column: str, max_groups: int = 10) -> list[Gallery]:
    """Each group: the row kept first, then the rows that point at it through `column`."""
    if not run.has(column):
        return []
    rows = run.rows.filter(pc.is_valid(run.rows.column(column)))
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, of, reason in zip(rows.column(ID).to_pylist(), rows.column(column).to_pylist(),
                             rows.column(REJECT).to_pylist()):
        if i != of:
            groups[of].append((i, reason or "kept"))
    out = []
    for keeper in sorted(groups, key=lambda k: (-len(groups[k]), k))[:max_groups]:
        tiles = [Tile(keeper, "kept copy")] + [Tile(i, reason) for i, reason in sorted(groups[keeper])]
        out.append(Gallery(f"{keeper}", f"{len(tiles)} images", tiles))
    return out


def fill(run: RunData, galleries: list[Gallery]) -> None:
    """Read the pixels of every tile at once (one pass over the ingest parts that hold them)."""
    from curation.report.data import load_images

    wanted = sorted({t.id for g in galleries for t in g.tiles})
    images = load_images(run.run_dir, wanted)
    cache: dict[str, str | None] = {}
    for g in galleries:
        for t in g.tiles:
            if t.id not in cache:
                cache[t.id] = thumbnail_uri(images[t.id]) if t.id in images else None
            t.uri = cache[t.id]
            if t.uri is None:
                t.problem = "no preview: the bytes do not decode" if t.id in images else "no bytes stored"
