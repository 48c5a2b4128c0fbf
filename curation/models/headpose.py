"""Head pose of one face: yaw, pitch, roll in degrees.

Default backend `mtcnn`: facenet-pytorch's MTCNN (weights ship in the package) finds faces and
five landmarks (eyes, nose tip, mouth corners); OpenCV `solvePnP` fits a generic 3D face to them.
Five points fix yaw and roll well; pitch is coarser (it rests on the nose's depth, and a smile
moves the mouth corners), which is enough to balance frontal / profile / looking-up views.

Angle conventions (camera frame: x right, y down, z into the scene):
  yaw > 0   the face turns towards the image's right (the subject's left),
  pitch > 0 the face tilts up,
  roll > 0  the head leans clockwise as seen in the image.
Mirroring an image negates yaw and roll and keeps pitch.

Another backend (a dedicated head-pose network) plugs in through `BACKENDS`: a class built with
`(device, **options)` whose `__call__(images, regions)` returns one `Pose | None` per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A generic adult face in millimetres, nose tip at the origin, in the camera frame above, looking
# at the camera. Anthropometric means: 63 mm between pupils, eyes 45 mm above and 33 mm behind the
# nose tip, mouth corners 50 mm apart, 25 mm below and 28 mm behind it. Order = MTCNN's landmarks:
# eye on the image's left, eye on the image's right, nose, mouth corner left, mouth corner right.
FACE_3D = np.array([
    [-31.5, -45.0, 33.0],
    [31.5, -45.0, 33.0],
    [0.0, 0.0, 0.0],
    [-25.0, 25.0, 28.0],
    [25.0, 25.0, 28.0],
])


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float
    score: float  # the face detector's confidence


def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole camera with an ~53 degree field of view on the long side: web photos carry no focal
    length we can trust, and the angles depend little on it for faces far from the lens."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def angles_from_rotation(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) for R = Rz(roll_raw) @ Ry(yaw_raw) @ Rx(pitch_raw), in our conventions."""
    yaw_raw = np.degrees(np.arcsin(np.clip(-R[2, 0], -1.0, 1.0)))
    pitch_raw = np.degrees(np.arctan2(R[2, 1], R[2, 2]))
    roll_raw = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
    # +y is down and +z into the scene, so a positive raw yaw turns the face to the image's left
    # and a positive raw pitch tilts it down: flip both so that right and up are positive.
    return float(-yaw_raw), float(-pitch_raw), float(roll_raw)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of `angles_from_rotation` (used by tests to project a known pose)."""
    y, p, r = np.radians([-yaw, -pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def solve_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float] | None:
    """PnP of five 2D landmarks (pixels of a `width` x `height` image) against `FACE_3D`."""
    import cv2

    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    K = camera_matrix(width, height)
    # EPnP gives a closed-form start; Levenberg-Marquardt refines it (5 points are few for either alone).
    ok, rvec, tvec = cv2.solvePnP(FACE_3D, pts, K, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return None
    ok, rvec, tvec = cv2.solvePnP(FACE_3D, pts, K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or float(tvec[2, 0]) <= 0:  # a face behind the camera is a failed fit
        return None
    R, _ = cv2.Rodrigues(rvec)
    return angles_from_rotation(R)


class MtcnnHeadPose:
    """`__call__(images, regions) -> [Pose | None]`: the most salient face inside each region
    (x0, y0, x1, y1 in that image's pixels; None = whole image)."""

    def __init__(self, device: str = "cpu", min_face_size: int = 20, min_score: float = 0.9):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)
        self.min_score = min_score

    def __call__(self, images: list[np.ndarray], regions: list[tuple[int, int, int, int] | None]
                 ) -> list[Pose | None]:
        out: list[Pose | None] = []
        for image, region in zip(images, regions):
            x0, y0, x1, y1 = region or (0, 0, image.shape[1], image.shape[0])
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            out.append(self._one(crop, (x0, y0), image.shape[1], image.shape[0]) if crop.size else None)
        return out

    def _one(self, crop: np.ndarray, offset: tuple[int, int], width: int, height: int) -> Pose | None:
        # MTCNN batches only same-sized images, and person crops never are: one call per crop.
        boxes, probs, marks = self.mtcnn.detect(crop, landmarks=True)
        if boxes is None:
            return None
        # facenet-pytorch can hand back object arrays (ragged per-image results): make them numeric.
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        probs = np.asarray(probs, dtype=float).reshape(-1)
        marks = np.asarray(marks, dtype=float).reshape(-1, 5, 2)
        keep = probs >= self.min_score
        if not keep.any():
            return None
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best = int(np.argmax(np.where(keep, area * probs, -1.0)))  # the largest confident face
        pts = marks[best] + np.asarray(offset, dtype=float)  # crop -> image pixels: the camera is the image's
        angles = solve_pose(pts, width, height)
        return None if angles is None else Pose(*angles, score=float(probs[best]))


BACKENDS = {"mtcnn": MtcnnHeadPose}
