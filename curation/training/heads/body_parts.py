"""The 29 body-part segmentation classes (Sapiens2), with the left/right swap used by flips.

Label maps are uint8 class ids 0-28; 255 marks pixels to ignore.
"""

from __future__ import annotations

CLASSES: list[str] = [
    "background", "apparel", "eyeglass", "face_neck", "hair",
    "left_foot", "left_hand", "left_lower_arm", "left_lower_leg", "left_shoe", "left_sock",
    "left_upper_arm", "left_upper_leg", "lower_clothing",
    "right_foot", "right_hand", "right_lower_arm", "right_lower_leg", "right_shoe", "right_sock",
    "right_upper_arm", "right_upper_leg", "torso", "upper_clothing",
    "lower_lip", "upper_lip", "lower_teeth", "upper_teeth", "tongue",
]  # fmt: skip
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
assert NUM_CLASSES == 29


def _swap(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


FLIP_CLASSES: list[int] = [CLASSES.index(_swap(c)) for c in CLASSES]
