"""Text and watermark overlays: PP-OCRv4 as shipped (weights included) by rapidocr-onnxruntime 1.4.4.

The DB text detector alone fires on text-like texture (it boxes the rim of the cup in skimage's
`coffee`); RapidOCR's own answer to that is to keep a box only when the recogniser reads it with
confidence >= `text_score` (0.5). We do the same, with the recognition confidence as the box score,
and skip the angle classifier (it only flips upside-down lines, which does not change the area).
A box must also read as at least `min_chars` characters: the detector's typical false positive is
a round or striped shape read as one glyph (coffee's cup rim reads "O" at 0.51), while overlays
and watermarks are words.

The detector runs with `limit_type: max` at `max_side`: images are shrunk so their long side fits,
never enlarged (the package default upsizes every image to a 736 px short side).
"""

from __future__ import annotations

import numpy as np


def model_files() -> list[str]:
    """The ONNX files this wrapper loads (detection and recognition), inside the package."""
    from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, read_yaml, update_model_path

    cfg = update_model_path(read_yaml(DEFAULT_CFG_PATH))
    return [cfg["Det"]["model_path"], cfg["Rec"]["model_path"]]


def _crop(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """A text line straightened out of its (possibly rotated) quadrilateral, as RapidOCR does."""
    import cv2

    w = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    h = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    out = cv2.warpPerspective(image, m, (max(1, w), max(1, h)), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_CUBIC)
    return np.rot90(out) if out.shape[0] >= 1.5 * out.shape[1] else out  # vertical text lines


class OverlayTextDetector:
    """`__call__(images RGB uint8) -> [(quads [K, 4, 2] float32, scores [K])]` in each image's pixels."""

    def __init__(self, max_side: int = 960, box_thresh: float = 0.5, min_text_score: float = 0.5,
                 recognize: bool = True, min_chars: int = 2, threads: int = 1):
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
        from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, read_yaml, update_model_path

        cfg = update_model_path(read_yaml(DEFAULT_CFG_PATH))
        for part in ("Det", "Rec"):  # onnxruntime would otherwise take every core of the node
            cfg[part].update(intra_op_num_threads=max(1, threads), inter_op_num_threads=1)
        cfg["Det"].update(limit_type="max", limit_side_len=max_side, box_thresh=box_thresh)
        self.det = TextDetector(cfg["Det"])
        self.rec = TextRecognizer(cfg["Rec"]) if recognize else None
        self.min_text_score = min_text_score
        self.min_chars = min_chars

    def __call__(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self._one(np.ascontiguousarray(im[..., ::-1])) for im in images]  # PP-OCR reads BGR

    def _one(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = bgr.shape[:2]
        x = self.det.get_preprocess(max(h, w))(bgr)
        none = (np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32))
        if x is None:
            return none
        boxes, scores = self.det.postprocess_op(self.det.infer(x)[0], (h, w))
        quads, kept = [], []
        for box, score in zip(boxes, scores):
            q = self.det.clip_det_res(self.det.order_points_clockwise(np.asarray(box, np.float32)), h, w)
            if np.linalg.norm(q[0] - q[1]) > 3 and np.linalg.norm(q[0] - q[3]) > 3:  # as RapidOCR filters
                quads.append(q)
                kept.append(float(score))
        if not quads:
            return none
        if self.rec is not None:
            read, _ = self.rec([_crop(bgr, q) for q in quads])
            keep = [i for i, (text, conf, *_) in enumerate(read)
                    if len(text.replace(" ", "")) >= self.min_chars and conf >= self.min_text_score]
            quads, kept = [quads[i] for i in keep], [float(read[i][1]) for i in keep]
            if not quads:
                return none
        return np.stack(quads).astype(np.float32), np.asarray(kept, np.float32)
