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

Two backends run the same graphs with rapidocr's own pre- and post-processing:
  onnxruntime  the package's CPU build (CPU nodes);
  torch        the graphs converted to torch modules (models/ocr_torch.py), on CUDA or the CPU,
               with larger batches (`det_batch` images, `rec_batch` lines) to keep a GPU busy.
"""

from __future__ import annotations

import math

import numpy as np

from curation.config import ConfigError

BACKENDS = ("onnxruntime", "torch")
_NONE = (np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32))


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
    """`__call__(images RGB uint8) -> [(quads [K, 4, 2] float32, scores [K])]` in each image's pixels.

    Batches never change an answer, so the two backends (and any batch sizes) give the same boxes:
    the detector batches only images whose inputs have the same shape (no padding: DB's map near a
    padded edge differs), and the recogniser pads each line to its own width (at least PP-OCR's
    320 px, rounded up to 32 px) and batches lines of equal padded width. PaddleOCR pads each
    line to the widest line of its batch instead, and a line read at 0.51 then reads at 0.49 in
    another batch.
    """

    def __init__(self, max_side: int = 960, box_thresh: float = 0.5, min_text_score: float = 0.5,
                 recognize: bool = True, min_chars: int = 2, threads: int = 1, backend: str = "onnxruntime",
                 device: str = "cpu", det_batch: int = 1, rec_batch: int = 6):
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
        from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, read_yaml, update_model_path

        if backend not in BACKENDS:
            raise ConfigError(f"text.backend: unknown {backend!r} (known: auto, {', '.join(BACKENDS)})")
        if backend == "onnxruntime" and device != "cpu":
            raise ConfigError(f"text.backend onnxruntime runs on the CPU only, not {device!r}: use backend torch")
        cfg = update_model_path(read_yaml(DEFAULT_CFG_PATH))
        for part in ("Det", "Rec"):  # onnxruntime would otherwise take every core of the node
            cfg[part].update(intra_op_num_threads=max(1, threads), inter_op_num_threads=1)
        cfg["Det"].update(limit_type="max", limit_side_len=max_side, box_thresh=box_thresh)
        self.det = TextDetector(cfg["Det"])
        self.rec = TextRecognizer(cfg["Rec"]) if recognize else None  # reads its characters from the graph
        if backend == "torch":  # same graphs, same rapidocr pre/post-processing; torch runs them
            from curation.models.ocr_torch import TorchSession

            self.det.infer = TorchSession(cfg["Det"]["model_path"], device)
            if self.rec is not None:
                self.rec.session = TorchSession(cfg["Rec"]["model_path"], device)
        self.backend, self.device = backend, device
        self.det_batch, self.rec_batch = max(1, det_batch), max(1, rec_batch)
        self.min_text_score = min_text_score
        self.min_chars = min_chars

    def __call__(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]  # PP-OCR reads BGR
        found = [self._boxes(b, m) for b, m in zip(bgr, self._probability_maps(bgr))]
        if self.rec is None:
            return [(np.stack(q).astype(np.float32), np.asarray(s, np.float32)) if q else _NONE for q, s in found]
        lines = [(i, q) for i, (quads, _) in enumerate(found) for q in quads]
        kept: dict[int, list] = {}
        for (i, q), (text, conf) in zip(lines, self._read([_crop(bgr[i], q) for i, q in lines])):
            if len(text.replace(" ", "")) >= self.min_chars and conf >= self.min_text_score:
                kept.setdefault(i, []).append((q, conf))
        return [(np.stack([q for q, _ in kept[i]]).astype(np.float32),
                 np.asarray([c for _, c in kept[i]], np.float32)) if i in kept else _NONE for i in range(len(bgr))]

    def _probability_maps(self, bgr: list[np.ndarray]) -> list[np.ndarray | None]:
        """DB's text-probability map per image ([1, 1, h, w] at the detector's input size)."""
        inputs = [self.det.get_preprocess(max(b.shape[:2]))(b) for b in bgr]
        maps: list[np.ndarray | None] = [None] * len(bgr)
        for idx in _same_shape_batches([None if x is None else x.shape for x in inputs], self.det_batch):
            pred = self.det.infer(np.concatenate([inputs[i] for i in idx]))[0]
            for k, i in enumerate(idx):
                maps[i] = pred[k:k + 1]
        return maps

    def _boxes(self, bgr: np.ndarray, prob: np.ndarray | None) -> tuple[list[np.ndarray], list[float]]:
        """Detector boxes as clockwise quads clipped to the image, tiny ones dropped (as RapidOCR)."""
        if prob is None:
            return [], []
        h, w = bgr.shape[:2]
        boxes, scores = self.det.postprocess_op(prob, (h, w))
        quads, kept = [], []
        for box, score in zip(boxes, scores):
            q = self.det.clip_det_res(self.det.order_points_clockwise(np.asarray(box, np.float32)), h, w)
            if np.linalg.norm(q[0] - q[1]) > 3 and np.linalg.norm(q[0] - q[3]) > 3:
                quads.append(q)
                kept.append(float(score))
        return quads, kept

    def _read(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence) per text-line crop, batched by padded width (see the class's doc)."""
        import cv2

        _, height, min_width = self.rec.rec_image_shape
        widths = [math.ceil(height * c.shape[1] / c.shape[0]) for c in crops]
        padded = [max(min_width, -(-w // 32) * 32) for w in widths]
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for idx in _same_shape_batches(padded, self.rec_batch):
            x = np.zeros((len(idx), 3, height, padded[idx[0]]), np.float32)
            for k, i in enumerate(idx):
                line = cv2.resize(crops[i], (widths[i], height)).astype(np.float32)
                x[k, :, :, :widths[i]] = line.transpose(2, 0, 1) / 127.5 - 1.0  # PP-OCR's (x/255 - 0.5)/0.5
            for i, (text, conf, *_) in zip(idx, self.rec.postprocess_op(self.rec.session(x)[0])):
                out[i] = (text, float(conf))
        return out


def _same_shape_batches(shapes: list, batch: int) -> list[list[int]]:
    """Indices grouped by equal shape (None: skipped), `batch` at most per group, in input order."""
    groups: dict = {}
    for i, shape in enumerate(shapes):
        if shape is not None:
            groups.setdefault(shape, []).append(i)
    return [idx[k:k + batch] for idx in groups.values() for k in range(0, len(idx), batch)]
