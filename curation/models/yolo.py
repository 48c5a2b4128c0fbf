"""Person detector: any ultralytics YOLO detect checkpoint, class `person` only.

Default model `yolo11n.pt` (COCO, class 0 = person). `weights: random` builds the same
architecture from its ultralytics YAML (`yolo11n.yaml`) with random weights: real compute, no
meaningful boxes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from curation.config import ConfigError
from curation.models.ultralytics_import import import_ultralytics
from curation.models.weights import RANDOM, WeightFile

DEFAULT_MODEL = "yolo11n.pt"


def is_path(model: str) -> bool:
    return os.sep in model or Path(model).expanduser().is_file()


def weight_file(stage: str, model: str, weights: str | None) -> WeightFile:
    """What `detect` needs: the checkpoint named by `model` (a name ultralytics can download, or a
    path), or an explicit `weights` path that overrides it."""
    explicit = weights if weights not in (None, RANDOM) else (model if is_path(model) else None)
    return WeightFile(stage=stage, key=f"{stage}.weights", file=Path(model).name, library="ultralytics",
                      ref=Path(model).name, explicit=explicit, random=weights == RANDOM)


def random_yaml(model: str) -> str:
    """`yolo11n.pt` -> `yolo11n.yaml`, the architecture file ultralytics ships for that name."""
    name = Path(model).name
    return name if name.endswith((".yaml", ".yml")) else Path(name).stem + ".yaml"


def check_random_architecture(model: str, key: str) -> None:
    import_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(random_yaml(model))
    except Exception as e:  # noqa: BLE001 - ultralytics raises FileNotFoundError or others
        raise ConfigError(f"{key}=random: no ultralytics architecture {random_yaml(model)!r} for "
                          f"model {model!r} ({type(e).__name__})") from None


class YoloDetector:
    """`__call__(images RGB uint8 [H, W, 3]) -> [K, 5] arrays (x0, y0, x1, y1, score)` per image,
    in the pixels of the array given."""

    def __init__(self, path: str | None, model: str = DEFAULT_MODEL, imgsz: int = 640, conf: float = 0.25,
                 iou: float = 0.7, max_det: int = 100, person_class: int | None = None, device: str = "cpu",
                 seed: int = 0):
        import torch

        from curation.models.device import seeded

        YOLO = import_ultralytics().YOLO

        if path is None:  # random weights, asked for explicitly by the caller
            with seeded(seed):
                self.model = YOLO(random_yaml(model), task="detect")
        else:
            self.model = YOLO(str(path), task="detect")
        if self.model.task != "detect":
            raise ConfigError(f"{model}: a YOLO {self.model.task} model, not a detector")
        names = {int(k): str(v) for k, v in (self.model.names or {}).items()}
        if person_class is None:
            person = [k for k, v in names.items() if v.lower() == "person"]
            if person:
                person_class = person[0]
            elif path is None:  # a YAML-built model has no class names; COCO puts person at 0
                person_class = 0
            else:
                raise ConfigError(f"{model}: no class named 'person' among {len(names)} classes; "
                                  f"set detect.person_class")
        self.person_class = person_class
        self.imgsz, self.conf, self.iou, self.max_det = imgsz, conf, iou, max_det
        self.device = device
        self.quantize = 16 if device.startswith("cuda") and torch.cuda.is_available() else None

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        # ultralytics reads numpy input as BGR (OpenCV order); our arrays are RGB.
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
        results = self.model.predict(bgr, imgsz=self.imgsz, conf=self.conf, iou=self.iou, max_det=self.max_det,
                                     classes=[self.person_class], device=self.device, quantize=self.quantize,
                                     verbose=False)
        out = []
        for r in results:
            xyxy = r.boxes.xyxy.float().cpu().numpy().reshape(-1, 4)
            score = r.boxes.conf.float().cpu().numpy().reshape(-1, 1)
            out.append(np.concatenate([xyxy, score], axis=1).astype(np.float32))
        return out
