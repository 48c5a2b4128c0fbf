"""`headpose`: MTCNN (real weights, shipped in facenet-pytorch) + PnP on real faces."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.arrowutil import to_array
from curation.models.headpose import FACE_3D, camera_matrix, rotation_from_angles, solve_pose
from curation.schema import arrow_type

from .media import image_table, jpeg

BOXES = pa.list_(pa.list_(pa.float32(), 5))


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (35, 0, 0), (-25, 12, 6), (10, -20, -15), (60, 5, 0)])
def test_pnp_recovers_a_known_pose_with_our_sign_conventions(yaw, pitch, roll):
    w, h = 640, 480
    pts = (rotation_from_angles(yaw, pitch, roll) @ FACE_3D.T).T + [0.0, 0.0, 700.0]
    uv = (camera_matrix(w, h) @ pts.T).T
    uv = uv[:, :2] / uv[:, 2:]
    assert solve_pose(uv, w, h) == pytest.approx((yaw, pitch, roll), abs=0.5)
    if yaw > 20:  # yaw > 0 turns the face to the image's right: the nose leaves the eyes' midline rightwards
        assert uv[2, 0] > (uv[0, 0] + uv[1, 0]) / 2


def _run(stage, photos, names, boxes=None):
    table = image_table([jpeg(photos[n]) for n in names],
                        person_boxes=pa.array(boxes or [None] * len(names), BOXES))
    out = stage.process(table)
    for col in stage.produces:
        assert to_array(col, out[col]).type == arrow_type(col)
    return out


def test_frontal_faces_have_small_yaw_and_a_mirror_flips_its_sign(headpose_stage, photos):
    out = _run(headpose_stage, photos, ["astronaut", "astronaut_flipped", "hopper"])
    assert out["head_found"] == [True, True, True]
    yaw = out["head_yaw"]
    assert all(abs(y) < 20 for y in yaw)
    assert np.sign(yaw[0]) == -np.sign(yaw[1]) != 0
    assert yaw[0] == pytest.approx(-yaw[1], abs=3)  # a mirror image is the mirrored pose
    assert out["head_roll"][0] == pytest.approx(-out["head_roll"][1], abs=3)
    # pitch rests on the nose landmark's few-pixel height: the coarse angle (models/headpose.py)
    assert out["head_pitch"][0] == pytest.approx(out["head_pitch"][1], abs=12)
    assert all(abs(p) < 25 for p in out["head_pitch"])


def test_the_largest_person_is_searched_in_its_box(headpose_stage, photos):
    """With detect's boxes, only the salient person's box is searched (decoded around it)."""
    boxes = [[[10, 10, 60, 60, 0.99], [100, 0, 420, 512, 0.9]],  # a tiny box with no face, then the subject
             [[0, 0, 40, 40, 0.5]]]  # a box elsewhere: no face inside it
    out = _run(headpose_stage, photos, ["astronaut", "astronaut"], boxes)
    assert out["head_found"] == [True, False]
    assert abs(out["head_yaw"][0]) < 20 and out["head_yaw"][1] is None


def test_no_face_is_a_flag_not_an_error(headpose_stage, photos):
    out = _run(headpose_stage, photos, ["coffee", "chelsea"])
    assert out["head_found"] == [False, False]
    assert out["head_yaw"] == [None, None] and out["reject"] == [None, None]


def test_undecodable_row_is_rejected_alone(headpose_stage, photos):
    table = image_table([jpeg(photos["astronaut"]), b"\x89PNG broken"], person_boxes=pa.array([None, None], BOXES))
    out = headpose_stage.process(table)
    assert out["reject"] == [None, "error:headpose"] and out["head_found"] == [True, None]
