"""`text`: PP-OCRv4 (real weights, shipped in rapidocr-onnxruntime) on real photos with and without
burned-in text."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curation.arrowutil import to_array
from curation.schema import arrow_type

from .media import image_table, jpeg, overlay


def _run(stage, images):
    out = stage.process(image_table([jpeg(im) for im in images]))
    for col in stage.produces:
        assert to_array(col, out[col]).type == arrow_type(col)
    return out


def test_overlay_text_is_found_and_clean_photos_have_none(text_stage, photos):
    out = _run(text_stage, [photos["coffee_sale"], photos["coffee"], photos["chelsea"], photos["astronaut"]])
    area, boxes = out["text_area"], out["text_boxes"]
    assert area[0] > 0.01 and len(boxes[0]) >= 1
    # the box sits on the caption drawn at (40, 40), 48 px high
    x0, y0, x1, y1, score = max(boxes[0], key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    assert x0 < 80 and y0 < 80 and x1 > 250 and 60 < y1 < 120 and score >= 0.5
    assert area[1:] == [0.0, 0.0, 0.0] and boxes[1:] == [[], [], []]  # coffee's cup rim is not text
    assert out["reject"] == [None] * 4


def test_area_is_a_fraction_of_the_image_and_boxes_are_in_original_pixels(text_stage, photos):
    """A 2400 px image is decoded at reduced scale; boxes come back in the file's pixels."""
    big = np.asarray(Image.fromarray(photos["coffee"]).resize((2400, 1600)))
    big = overlay(big, "WATERMARK", (200, 400), 200)
    out = _run(text_stage, [big])
    (x0, y0, x1, y1, _), *_ = out["text_boxes"][0]
    assert x0 < 400 and 300 < y0 < 700 and x1 > 1100  # where it was drawn, at full-size coordinates
    box_area = (x1 - x0) * (y1 - y0) / (big.shape[0] * big.shape[1])
    assert 0 < out["text_area"][0] <= 1.0 and out["text_area"][0] == pytest.approx(box_area, rel=0.5)


def test_undecodable_row_is_rejected_alone(text_stage, photos):
    out = text_stage.process(image_table([jpeg(photos["coffee_sale"]), b"\xff\xd8\xff broken"]))
    assert out["reject"] == [None, "error:text"] and out["text_area"][1] is None
