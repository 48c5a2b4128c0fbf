"""The model stages inside the real runner: start-up failure before any work, the early filter, and
the whole per-image DAG to WebDataset shards on a small crawl of real photos."""

from __future__ import annotations

import json

import pytest

from curation.config import ConfigError
from curation.runner.pipeline import run_pipeline
from curation.runner.store import RunStore
from curation.schema import ID, REJECT
from curation.stages.dag import load_config

from .media import jpeg

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # one ~45 s pipeline run, shared

DAG = "run.stages=[ingest,decode,detect,headpose,embed,quality,text,filter,shard]"
# The crawl's short sides: bus 810, zidane 720 | astronaut 512, hopper 512, coffee 400, chelsea 300.
THRESHOLD = 600
BIG = {"bus", "zidane"}


@pytest.fixture(scope="module")
def crawl(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("mini-crawl")
    for name in ("bus", "zidane", "astronaut", "hopper", "coffee_sale", "chelsea"):
        (root / f"{name}.jpg").write_bytes(jpeg(photos[name]))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="module")
def dag_run(ray_local, crawl, whole_image_yolo, tmp_path_factory):
    out = tmp_path_factory.mktemp("dag") / "out"
    cfg = load_config(None, [
        DAG, f"detect.weights={whole_image_yolo}", "detect.imgsz=320", "embed.weights=random",
        "quality.weights=random", f"filters.min_person_short_side={THRESHOLD}", "ingest.shard_size=4"])
    summary = run_pipeline(cfg, str(crawl), str(out))
    return out, summary


def _rows(out, stage):
    store = RunStore(str(out))
    recs = store.done_records(stage).values()
    tables = [RunStore.read_parts(r) for r in recs if r["parts"]]
    return [row for t in tables for row in t.to_pylist()]


def test_missing_weights_stop_the_run_before_any_work(empty_caches, crawl, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_pipeline(load_config(None, [DAG]), str(crawl), str(out))
    message = str(err.value)
    assert "yolo11n.pt" in message and "curate weights fetch" in message
    # One error for the whole run: the CLIP checkpoint of embed is named beside YOLO's.
    assert "embed needs" in message and "detect needs" in message
    assert not out.exists()  # no run folder, no ingest, nothing to clean up


def test_early_filter_stops_small_people_before_clip(dag_run):
    out, summary = dag_run
    detect = {r[ID]: r for r in _rows(out, "detect")}
    assert len(detect) == 6  # every decodable image reached detect (the broken one did not)
    source = {r[ID]: r["source"] for r in _rows(out, "ingest")}
    big = {i for i in detect if any(source[i].endswith(f"/{n}.jpg") for n in BIG)}
    small = set(detect) - big
    assert len(big) == 2
    for i in small:
        assert detect[i][REJECT] == "min_person_short_side"  # stopped in detect's own parts
        assert detect[i]["max_person_short_side"] < THRESHOLD
    for later in ("headpose", "embed", "quality", "text"):
        assert {r[ID] for r in _rows(out, later)} == big, later  # the small ones never got there
    assert summary["rejects"]["min_person_short_side"] == 4


def test_the_whole_dag_writes_model_columns_into_the_shards(dag_run):
    import webdataset as wds

    out, summary = dag_run
    assert summary["balanced"] and summary["inputs"] == 7 and summary["kept"] == 2
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    urls = [str(out / "shards" / s["path"]) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 2
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["max_person_short_side"] >= THRESHOLD and meta["num_persons"] >= 1
        assert len(meta["person_boxes"][0]) == 5
        assert meta["head_found"] in (True, False) and 0.0 <= meta["realism"] <= 1.0
        assert isinstance(meta["aesthetic"], float) and meta["text_area"] >= 0.0
    embed = _rows(out, "embed")
    assert all(len(r["clip"]) == 512 for r in embed)
    quality = _rows(out, "quality")
    assert len(quality) == 2 and all(r["aesthetic"] is not None and r["realism"] is not None for r in quality)


def test_random_weights_are_recorded_in_the_ledger_and_the_manifest(dag_run):
    out, _ = dag_run
    ledger = json.loads((out / "ledger.json").read_text())
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    # embed and quality were asked for random weights by name; detect loaded a checkpoint file.
    assert ledger["random_weights"] == manifest["random_weights"] == ["embed", "quality"]
    by_stage = {(w["stage"], w["random"]) for w in manifest["weights"]}
    assert ("embed", True) in by_stage and ("detect", False) in by_stage
