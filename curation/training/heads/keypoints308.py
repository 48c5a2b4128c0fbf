"""The 308-keypoint whole-body definition: names, groups, flip pairs, skeleton, OKS sigmas.

Layout (index ranges): body 0-16 (COCO order), feet 17-22 (COCO-WholeBody), face 23-260,
left hand 261-280, right hand 281-300, extras 301-307.

Sigmas: COCO / COCO-WholeBody where the names match (body, feet, hands: the 20 finger points per
hand, the hand root being the body's wrist). Documented defaults elsewhere:
  * face: 238 points as 22 midline + 108 left/right pairs, named `face_mid_*`, `face_left_*`,
    `face_right_*`; sigma 0.02 (COCO-WholeBody's 68 face sigmas lie in 0.007-0.045, mean ~0.02);
  * extras: neck 0.079, acromion 0.079 (as the shoulder), olecranon and cubital fossa 0.072 (as
    the elbow).
"""

from __future__ import annotations

import itertools

import numpy as np

BODY = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
BODY_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089,
]  # fmt: skip
FEET = ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
FEET_SIGMAS = [0.068, 0.066, 0.066, 0.092, 0.094, 0.094]
FINGERS = [
    f"{finger}{i}"
    for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    for i in range(1, 5)
]
# COCO-WholeBody hand sigmas without the hand root (index 0).
HAND_SIGMAS = [
    0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024,
    0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.020, 0.019, 0.022, 0.031,
]  # fmt: skip
FACE_MIDLINE, FACE_PAIRS, FACE_SIGMA = 22, 108, 0.02
EXTRAS = ["neck", "left_acromion", "right_acromion", "left_olecranon", "right_olecranon",
          "left_cubital_fossa", "right_cubital_fossa"]  # fmt: skip
EXTRA_SIGMAS = [0.079, 0.079, 0.079, 0.072, 0.072, 0.072, 0.072]

FACE = (
    [f"face_mid_{i:03d}" for i in range(FACE_MIDLINE)]
    + [f"face_left_{i:03d}" for i in range(FACE_PAIRS)]
    + [f"face_right_{i:03d}" for i in range(FACE_PAIRS)]
)
NAMES: list[str] = BODY + FEET + FACE + [f"left_{f}" for f in FINGERS] + [f"right_{f}" for f in FINGERS] + EXTRAS
NUM_KEYPOINTS = len(NAMES)
assert NUM_KEYPOINTS == 308

_starts = np.cumsum([0, len(BODY), len(FEET), len(FACE), len(FINGERS), len(FINGERS), len(EXTRAS)])
GROUPS: dict[str, list[int]] = {
    "body": list(range(_starts[0], _starts[1])),
    "feet": list(range(_starts[1], _starts[2])),
    "face": list(range(_starts[2], _starts[3])),
    "hands": list(range(_starts[3], _starts[5])),
    "extras": list(range(_starts[5], _starts[6])),
}
SIGMAS = np.array(
    BODY_SIGMAS + FEET_SIGMAS + [FACE_SIGMA] * len(FACE) + HAND_SIGMAS * 2 + EXTRA_SIGMAS, dtype=np.float64
)


def _flip_name(name: str) -> str:
    if name.startswith("face_left_"):
        return name.replace("face_left_", "face_right_")
    if name.startswith("face_right_"):
        return name.replace("face_right_", "face_left_")
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


_INDEX = {n: i for i, n in enumerate(NAMES)}
FLIP_INDICES: list[int] = [_INDEX[_flip_name(n)] for n in NAMES]
FLIP_PAIRS: list[tuple[int, int]] = [(i, j) for i, j in enumerate(FLIP_INDICES) if i < j]

_BODY_LINKS = [
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ("left_ankle", "left_big_toe"), ("left_ankle", "left_small_toe"), ("left_ankle", "left_heel"),
    ("right_ankle", "right_big_toe"), ("right_ankle", "right_small_toe"), ("right_ankle", "right_heel"),
    ("neck", "left_acromion"), ("neck", "right_acromion"), ("left_acromion", "left_shoulder"),
    ("right_acromion", "right_shoulder"), ("left_olecranon", "left_elbow"), ("right_olecranon", "right_elbow"),
    ("left_cubital_fossa", "left_elbow"), ("right_cubital_fossa", "right_elbow"),
]  # fmt: skip


def _hand_links(side: str) -> list[tuple[str, str]]:
    links = []
    for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"):
        chain = [f"{side}_wrist"] + [f"{side}_{finger}{i}" for i in range(1, 5)]
        links += list(itertools.pairwise(chain))
    return links


SKELETON: list[tuple[int, int]] = [
    (_INDEX[a], _INDEX[b]) for a, b in _BODY_LINKS + _hand_links("left") + _hand_links("right")
]
