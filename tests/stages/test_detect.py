"""`detect`: the real YOLO architecture through the real stage, boxes back in original pixels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.arrowutil import to_array
from curation.config import ConfigError
from curation.schema import arrow_type
from curation.stages.dag import load_config
from curation.stages.detect import DetectStage

from .media import image_table, jpeg


def _columns_typed(stage, out: dict) -> dict[str, pa.Array]:
    """The stage's outputs as the runner stores them, checked against schema.py."""
    typed = {}
    for col in stage.produces:
        arr = to_array(col, out[col])
        assert arr.type == arrow_type(col), col
        typed[col] = arr
    return typed


@pytest.fixture(scope="module")
def whole_image_detect(whole_image_yolo):
    cfg = load_config(None, [f"detect.weights={whole_image_yolo}", "detect.imgsz=320"])
    stage = DetectStage(cfg)
    stage.check()
    stage.setup()
    return stage


def test_random_yolo_runs_the_real_architecture_and_outputs_schema_types(random_config, photos):
    stage = DetectStage(random_config)
    assert stage.random_weights and stage.weight_files()[0].random
    stage.check()  # random weights asked for by name: no file needed, nothing downloaded
    stage.setup()
    table = image_table([jpeg(photos["bus"]), jpeg(photos["zidane"]), b"\xff\xd8 not a jpeg"])
    out = stage.process(table)
    typed = _columns_typed(stage, out)
    assert out["reject"] == [None, None, "error:detect"]  # one bad row, not a failed batch
    assert typed["num_persons"].to_pylist()[2] is None
    for boxes, n, largest in zip(out["person_boxes"][:2], out["num_persons"][:2], out["max_person_short_side"][:2]):
        assert n == len(boxes) and largest >= 0.0  # random weights: few or no boxes, but well formed


def test_boxes_come_back_in_original_pixels(whole_image_detect, photos):
    """The detector sees a DCT-reduced decode; boxes must be scaled back to the file's pixels."""
    names = ["bus", "zidane", "astronaut"]
    table = image_table([jpeg(photos[n]) for n in names])
    out = whole_image_detect.process(table)
    _columns_typed(whole_image_detect, out)
    for name, boxes, largest in zip(names, out["person_boxes"], out["max_person_short_side"]):
        h, w = photos[name].shape[:2]
        b = np.asarray(boxes)
        assert b.shape[1] == 5 and len(b) >= 1
        assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()
        assert b[:, 4].min() >= 0.25  # detect.conf
        # the full-frame person: its short side is the image's, within letterbox rounding
        assert largest == pytest.approx(min(w, h), rel=0.03), name


def test_detector_is_fed_a_reduced_decode(whole_image_detect, photos, monkeypatch):
    seen = []
    model = whole_image_detect.model
    real = type(model).__call__
    monkeypatch.setattr(type(model), "__call__", lambda self, ims: seen.extend(i.shape for i in ims) or real(self, ims))
    whole_image_detect.process(image_table([jpeg(photos["bus"])]))  # 810 x 1080
    (h, w, _), = seen
    assert max(h, w) >= 320 and max(h, w) <= 1080 // 2  # imgsz covered, the full size never decoded


def test_a_config_without_random_or_staged_weights_fails_in_check(empty_caches):
    stage = DetectStage(load_config(None, []))  # yolo11n.pt, offline, no $CURATE_WEIGHTS
    with pytest.raises(ConfigError) as err:
        stage.check()
    msg = str(err.value)
    assert "yolo11n.pt" in msg and "curate weights fetch" in msg and "detect.weights=random" in msg
    assert not hasattr(stage, "model")  # nothing was loaded


def test_random_weights_need_a_known_architecture():
    with pytest.raises(ConfigError, match="no ultralytics architecture"):
        DetectStage(load_config(None, ["detect.model=not_a_yolo.pt", "detect.weights=random"])).check()


def test_explicit_checkpoint_path_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match="detect.weights: .*nope.pt does not exist"):
        DetectStage(load_config(None, [f"detect.weights={missing}"])).check()
