"""Model-stage fixtures: real photos from installed packages, encoded as a crawl delivers them, and
each model stage built once per session (model loads dominate these tests' time on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.stages.dag import load_config

from .media import load_photos


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return load_photos()


@pytest.fixture(autouse=True)
def _no_staged_weights(monkeypatch):
    """A developer's $CURATE_WEIGHTS must not change what these tests see."""
    monkeypatch.delenv("CURATE_WEIGHTS", raising=False)


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """Library caches pointed at empty folders: the weights are nowhere, as on a fresh offline node."""
    import huggingface_hub.constants
    import torch.hub

    from curation.models.yolo import import_ultralytics

    import_ultralytics()
    from ultralytics.utils import SETTINGS

    for d in ("yolo", "hf", "torch"):
        (tmp_path / d).mkdir()
    monkeypatch.setitem(SETTINGS, "weights_dir", str(tmp_path / "yolo"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture(scope="session")
def whole_image_yolo(tmp_path_factory) -> Path:
    """A real yolo11n checkpoint whose head is set to see one person filling the whole image.

    Random YOLO weights find nothing, which tests nothing downstream. Zeroing the last convs and
    setting their biases makes every anchor predict class 0 with the largest box distance, so the
    best box after NMS is the full frame: the real architecture, loaded through the real checkpoint
    path, with an answer we know (max_person_short_side == the image's short side). The coarser
    the scale the higher its score, so the full-frame boxes (stride 32) rank first."""
    import torch

    from curation.models.yolo import import_ultralytics

    torch.manual_seed(0)
    model = import_ultralytics().YOLO("yolo11n.yaml", task="detect")
    head = model.model.model[-1]
    with torch.no_grad():
        for level, (box, cls) in enumerate(zip(head.cv2, head.cv3)):
            cls[-1].weight.zero_()
            cls[-1].bias.fill_(-10.0)
            cls[-1].bias[0] = 2.0 + 4.0 * level
            box[-1].weight.zero_()
            bins = box[-1].bias.view(4, head.reg_max)
            bins.fill_(0.0)
            bins[:, -1] = 10.0  # each side at the farthest distance the head can express
    model.model.names = {i: ("person" if i == 0 else f"class{i}") for i in range(head.nc)}
    path = tmp_path_factory.mktemp("yolo") / "whole_image_person.pt"
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def random_config():
    """YOLO, CLIP and the aesthetic head with random weights, asked for by name."""
    return load_config(None, ["detect.weights=random", "detect.imgsz=320", "embed.weights=random",
                              "quality.weights=random"])


def _ready(stage):
    stage.check()
    stage.setup()
    return stage


@pytest.fixture(scope="session")
def embed_stage(random_config):
    from curation.stages.embed import EmbedStage

    return _ready(EmbedStage(random_config))


@pytest.fixture(scope="session")
def quality_stage(random_config):
    """Built with every image path of open_clip booby-trapped (counted in `image_tower_calls`):
    quality's start-up must not need the image tower either."""
    import open_clip

    from curation.models.clip import ClipModel
    from curation.stages.quality import QualityStage

    calls = {"image": 0}

    def trap(*args, **kwargs):
        calls["image"] += 1
        raise AssertionError("quality ran the CLIP image tower")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ClipModel, "encode_images", trap)
        mp.setattr(open_clip.model.CLIP, "encode_image", trap)
        stage = _ready(QualityStage(random_config))
    stage.image_tower_calls = calls
    return stage


@pytest.fixture(scope="session")
def headpose_stage():
    from curation.stages.headpose import HeadposeStage

    return _ready(HeadposeStage(load_config(None, [])))


@pytest.fixture(scope="session")
def text_stage():
    from curation.stages.text import TextStage

    return _ready(TextStage(load_config(None, [])))
