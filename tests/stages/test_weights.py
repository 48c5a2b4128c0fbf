"""Weight resolution, staging for offline clusters (`curate weights`), and the random-weights record."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curation.config import ConfigError
from curation.models import weights as W
from curation.stages.dag import load_config, weight_files
from curation.stages.detect import DetectStage
from curation.weights_cli import weights_app

from .media import image_table, jpeg

RANDOM_CLIP = ["embed.weights=random", "quality.weights=random"]
SETS = [arg for s in RANDOM_CLIP for arg in ("--set", s)]


def _head(**kw) -> W.WeightFile:
    return W.WeightFile(stage="quality", key="quality.weights", file="head.pth", library="url",
                        ref="https://example.invalid/head.pth", **kw)


def test_resolution_order_config_then_curate_weights_then_library_cache(empty_caches, tmp_path, monkeypatch):
    cache = empty_caches / "torch" / "checkpoints"
    cache.mkdir()
    (cache / "head.pth").write_bytes(b"cache")
    assert W.find(_head()) == W.Found(cache / "head.pth", "library cache")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "head.pth").write_bytes(b"staged")
    monkeypatch.setenv("CURATE_WEIGHTS", str(staged))
    assert W.find(_head()).where == "$CURATE_WEIGHTS"
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"mine")
    assert W.find(_head(explicit=str(mine))) == W.Found(mine, "config")
    assert W.find(_head(random=True)) is None


def test_offline_and_missing_names_every_file_and_the_fetch_command(empty_caches, monkeypatch):
    monkeypatch.setattr(W, "download", lambda w: pytest.fail("offline: no download may be tried"))
    files = [_head(), W.WeightFile("detect", "detect.weights", "yolo11n.pt", "ultralytics", "yolo11n.pt")]
    with pytest.raises(ConfigError) as err:
        W.resolve(files)
    msg = str(err.value)
    assert "quality needs head.pth (offline)" in msg and "detect needs yolo11n.pt (offline)" in msg
    assert "curate weights fetch --to DIR" in msg and "CURATE_WEIGHTS" in msg


def test_a_partial_copy_in_curate_weights_is_caught(tmp_path, monkeypatch):
    (tmp_path / "head.pth").write_bytes(b"half")
    W.write_index(tmp_path, {"head.pth": {"sha256": "x", "bytes": 8}})
    monkeypatch.setenv("CURATE_WEIGHTS", str(tmp_path))
    with pytest.raises(ConfigError, match="size differs"):
        W.find(_head())


def test_fetch_list_verify_then_the_stage_runs_on_the_staged_file(whole_image_yolo, empty_caches, tmp_path,
                                                                   monkeypatch, photos):
    runner = CliRunner()
    dest = tmp_path / "weights"
    # fetch copies what the config names (here an explicit checkpoint; online it would download)
    res = runner.invoke(weights_app, ["fetch", "--to", str(dest), "--set", f"detect.weights={whole_image_yolo}",
                                      *SETS])
    assert res.exit_code == 0, res.output
    index = json.loads((dest / "index.json").read_text())["files"]
    assert set(index) == {"yolo11n.pt"} and len(index["yolo11n.pt"]["sha256"]) == 64
    assert "random (nothing to fetch)" in res.output and "ships in its package" in res.output

    monkeypatch.setenv("CURATE_WEIGHTS", str(dest))
    sets = SETS
    res = runner.invoke(weights_app, ["verify", *sets])
    assert res.exit_code == 0 and "OK   yolo11n.pt: ok" in res.output, res.output
    res = runner.invoke(weights_app, ["list", "--json", *sets])
    record = {r["file"]: r for r in json.loads(res.output)}
    assert record["yolo11n.pt"]["where"] == "$CURATE_WEIGHTS" and record["yolo11n.pt"]["sha256"] == index[
        "yolo11n.pt"]["sha256"]
    assert record["open_clip_ViT-B-32_laion2b_s34b_b79k.safetensors"]["random"] is True

    # the default config (yolo11n.pt, no path) now loads the staged file: real weights, real boxes
    stage = DetectStage(load_config(None, ["detect.imgsz=320"]))
    stage.check()
    stage.setup()
    assert not stage.random_weights
    out = stage.process(image_table([jpeg(photos["zidane"])]))
    assert out["max_person_short_side"][0] == pytest.approx(720, rel=0.03)

    data = bytearray((dest / "yolo11n.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in transit: same size, wrong content
    (dest / "yolo11n.pt").write_bytes(bytes(data))
    res = runner.invoke(weights_app, ["verify", *sets])
    assert res.exit_code == 1 and "FAIL yolo11n.pt: checksum mismatch" in res.output
    (dest / "yolo11n.pt").write_bytes(bytes(data[:-10]))  # a torn copy: the stage refuses it at start-up
    with pytest.raises(ConfigError, match="size differs"):
        DetectStage(load_config(None, [])).check()


def test_fetch_offline_tries_everything_then_names_what_is_missing(empty_caches, tmp_path):
    res = CliRunner().invoke(weights_app, ["fetch", "--to", str(tmp_path / "w")])
    assert isinstance(res.exception, ConfigError)
    msg = str(res.exception)
    for name in ("yolo11n.pt", "open_clip_ViT-B-32_laion2b_s34b_b79k.safetensors", "sa_0_4_vit_b_32_linear.pth"):
        assert name in msg
    assert "MISSING" in res.output


def test_random_weights_are_recorded_for_the_manifest():
    cfg = load_config(None, ["detect.weights=random", *RANDOM_CLIP])
    assert W.random_weight_stages(weight_files(cfg)) == ["detect", "embed", "quality"]
    record = W.weights_record(weight_files(cfg))
    assert {r["stage"] for r in record if r["random"]} == {"detect", "embed", "quality"}
    packaged = [r for r in record if r["where"] == "package"]
    assert {r["stage"] for r in packaged} == {"headpose", "text"} and all(len(r["sha256"]) == 64 for r in packaged)
    assert W.random_weight_stages(weight_files(load_config(None, []))) == []
    only_text = load_config(None, ["run.stages=[ingest,decode,text,filter,shard]"])
    assert [r["stage"] for r in W.weights_record(weight_files(only_text))] == ["text", "text"]


def test_offline_flags_skip_the_network(monkeypatch):
    monkeypatch.setattr(W.socket, "create_connection", lambda *a, **k: pytest.fail("no probe when flagged"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.offline(W.WeightFile("embed", "embed.weights", "x", "open_clip", "ViT-B-32:openai"))
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    assert W.offline(_head())
