"""Near-duplicate quality on real photos: the phash and semdedup stages through Ray
Data on originals + transformed copies (JPEG q50-95, resize 0.5x-2x, crop <= 5%, brightness
+-10%) + byte-identical copies + distinct images. Prints precision / recall per transform."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from conftest import Ctx

from curation.config import Config
from curation.stages.phash import PhashConfig, PhashStage
from curation.stages.semdedup import SemdedupConfig, SemdedupStage

pytestmark = pytest.mark.usefixtures("ray_local")
INPUT_COLS = ("id", "input_shard", "image", "content_hash", "width", "height", "aesthetic")
CLIP_SOURCES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "china", "flower", "bus", "zidane",
                "grace_hopper")


def run_stage(stage, table: pa.Table, ctx) -> pa.Table:
    import ray
    import ray.data

    return pa.concat_tables(ray.get(stage.run_global(ray.data.from_arrow(table), ctx).to_arrow_refs()))


def final_group(out: pa.Table, link: str) -> dict[str, str]:
    """Row id -> id of the kept row its duplicate chain ends at."""
    parent = {r["id"]: r[link] for r in out.select(["id", link]).to_pylist()}

    def root(i: str) -> str:
        while parent.get(i):
            i = parent[i]
        return i

    return {i: root(i) for i in parent}


def quality(rows: list[dict], group: dict[str, str]) -> tuple[float, dict[str, float], int]:
    """(pair precision, recall per transform kind, predicted pairs). A copy is recalled when it
    lands in the same group as its original; a predicted pair is right when both come from the
    same source image."""
    source = {r["id"]: r["source"] for r in rows}
    members = defaultdict(list)
    for i, g in group.items():
        members[g].append(i)
    pairs = right = 0
    for ids in members.values():
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                pairs += 1
                right += source[ids[a]] == source[ids[b]]
    original = {r["source"]: r["id"] for r in rows if r["kind"] == "original"}
    hits = defaultdict(list)
    for r in rows:
        if r["kind"] != "original" and r["id"] in group:
            hits[r["kind"]].append(group[r["id"]] == group[original[r["source"]]])
    return (right / pairs if pairs else 1.0), {k: float(np.mean(v)) for k, v in sorted(hits.items())}, pairs


def report(name: str, precision: float, recall: dict[str, float], pairs: int) -> str:
    by_family = defaultdict(list)
    for kind, value in recall.items():
        by_family[kind.split("_")[0]].append(value)
    fam = ", ".join(f"{f} {np.mean(v):.2f}" for f, v in by_family.items())
    return f"[{name}] pair precision {precision:.3f} over {pairs} predicted pairs; recall by transform: {fam}"


@pytest.fixture(scope="module")
def phash_run(near_dup_set, tmp_path_factory):
    table = pa.Table.from_pylist([{k: r[k] for k in INPUT_COLS} for r in near_dup_set])
    cfg = Config(stages={"phash": PhashConfig()})
    ctx = Ctx(config=cfg, cache_uri=str(tmp_path_factory.mktemp("out") / "phash" / "cache"), input_fingerprint="fp-a")
    stage = PhashStage(cfg)
    out = run_stage(stage, table, ctx)
    return table, ctx, stage, out


def test_phash_precision_recall_on_real_photos(near_dup_set, phash_run, capsys):
    table, _, stage, out = phash_run
    assert stage.last_hash_cache_hit is False
    assert sorted(out["id"].to_pylist()) == sorted(table["id"].to_pylist())  # nothing lost or doubled
    precision, recall, pairs = quality(near_dup_set, final_group(out, "dup_of"))
    with capsys.disabled():
        print(f"\n{report('phash max_distance=4', precision, recall, pairs)}")
        print("[phash] recall per transform: " + ", ".join(f"{k} {v:.2f}" for k, v in recall.items()))
    assert precision >= 0.99
    for kind, value in recall.items():
        if kind.startswith(("jpeg", "resize")):
            assert value >= 0.95, (kind, value)
    rows = {r["id"]: r for r in near_dup_set}
    result = {r["id"]: r for r in out.to_pylist()}
    for r in near_dup_set:  # byte copies: exact duplicates of their original (same size: id decides)
        if r["kind"] == "exact_copy":
            orig = next(o for o in near_dup_set if o["source"] == r["source"] and o["kind"] == "original")
            assert result[r["id"]]["reject"] == "exact_duplicate" and result[r["id"]]["dup_of"] == orig["id"]
    for row in result.values():  # keep policy: a group's kept row is its largest image
        if row["reject"] == "near_duplicate":
            kept = rows[result[row["id"]]["dup_of"]]
            assert result[kept["id"]]["reject"] is None
            assert kept["width"] * kept["height"] >= rows[row["id"]]["width"] * rows[row["id"]]["height"]
    assert all(r["phash"] is not None for r in result.values())


def test_phash_new_threshold_reuses_cached_hashes(phash_run):
    """A rerun with a new max_distance must not decode or hash again: the images are replaced by
    garbage and the hashes still come back identical (from the cache keyed by the fingerprint)."""
    table, ctx, _, first = phash_run
    garbage = table.set_column(table.column_names.index("image"), "image",
                               pa.array([b"garbage"] * table.num_rows, pa.binary()))
    stage = PhashStage(Config(stages={"phash": PhashConfig(max_distance=8)}))
    second = run_stage(stage, garbage, ctx)
    assert stage.last_hash_cache_hit is True
    phash_of = dict(zip(first["id"].to_pylist(), first["phash"].to_pylist()))
    assert dict(zip(second["id"].to_pylist(), second["phash"].to_pylist())) == phash_of
    n_near = [pa.compute.sum(pa.compute.equal(t["reject"], "near_duplicate")).as_py() for t in (first, second)]
    assert n_near[1] >= n_near[0]
    # a new input fingerprint invalidates the cache: now the garbage is hashed, and rejected
    new_ctx = Ctx(config=ctx.config, cache_uri=ctx.cache_uri, input_fingerprint="fp-b")
    third = run_stage(stage, garbage, new_ctx)
    assert stage.last_hash_cache_hit is False
    assert set(third["reject"].to_pylist()) == {"phash_failed"} and third.num_rows == table.num_rows


@pytest.fixture(scope="module")
def clip_rows(near_dup_set):
    """Random-weight CLIP ViT-B-32 through the embed stage's own wrapper (its DCT-scaled decode,
    the model's transform, float16 output; no weights offline) on the photo subset."""
    from curation.stages.embed import EmbedConfig, EmbedStage

    rows = [r for r in near_dup_set if r["source"] in CLIP_SOURCES or r["kind"] == "original"]
    stage = EmbedStage(Config(stages={"embed": EmbedConfig(weights="random")}))
    stage.setup()
    columns = [stage.process(pa.Table.from_pylist([{k: r[k] for k in ("image", "width", "height")}
                                                   for r in rows[i:i + 32]]))["clip"]
               for i in range(0, len(rows), 32)]
    assert all(c.null_count == 0 for c in columns)
    return rows, pa.chunked_array(columns).combine_chunks()


def semdedup_run(rows: list[dict], clip: pa.Array, eps: float, cache: str) -> pa.Table:
    keys = ("id", "input_shard", "width", "height", "aesthetic")
    table = pa.Table.from_pylist([{k: r[k] for k in keys} for r in rows])
    cfg = Config(stages={"semdedup": SemdedupConfig(n_clusters=4, eps=eps)})
    out = run_stage(SemdedupStage(cfg), table.append_column("clip", clip), Ctx(config=cfg, cache_uri=cache))
    assert sorted(out["id"].to_pylist()) == sorted(table["id"].to_pylist())
    kept = set(out.filter(pa.compute.is_null(out["reject"]))["id"].to_pylist())
    targets = set(out.filter(pa.compute.is_valid(out["semdup_of"]))["semdup_of"].to_pylist())
    assert targets <= kept and kept  # every group points at a kept row: one kept, not none
    return out


# Measured on this set through the embed stage (random-weight ViT-B-32, float16 vectors):
# 1 - cosine of a photo's q95 re-encode to its original is <= 1.3e-4 (byte copies ~3e-7), and of
# the closest two rows of *different* photos 3.6e-4. eps = 2e-4 sits between them, 1.6x above
# the first and 1.8x below the second: random weights still map re-encodes of one photo to nearly
# the same vector, while distinct photos stay apart at this scale.
TIGHT_EPS = 2e-4


def test_semdedup_random_clip_groups_reencodes_and_keeps_one(clip_rows, tmp_path, capsys):
    rows, clip = clip_rows
    out = semdedup_run(rows, clip, TIGHT_EPS, str(tmp_path / "cache"))
    group = final_group(out, "semdup_of")
    precision, recall, pairs = quality(rows, group)
    with capsys.disabled():
        print(f"\n{report(f'semdedup eps={TIGHT_EPS}, RANDOM-WEIGHT CLIP ViT-B-32', precision, recall, pairs)}")
    assert precision >= 0.99  # no two different photos joined
    kept = set(out.filter(pa.compute.is_null(out["reject"]))["id"].to_pylist())
    by_source = defaultdict(list)
    for r in rows:
        if r["kind"] in ("original", "jpeg_q95", "exact_copy"):
            by_source[r["source"]].append(r["id"])
    assert sum(len(v) > 1 for v in by_source.values()) == len(CLIP_SOURCES)
    source_of = {r["id"]: r["source"] for r in rows}
    for source, ids in by_source.items():
        assert len({group[i] for i in ids}) == 1, source  # the re-encode and byte copies are found
        members = {i for i, g in group.items() if g == group[ids[0]]}
        winners = kept & members
        assert len(winners) == 1, source  # one kept for the photo, not none and not two
        assert {source_of[i] for i in members} == {source}  # ... and it is this photo
