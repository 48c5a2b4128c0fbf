"""`embed` (real open_clip ViT-B-32, random weights asked for by name) and `quality` from its vectors."""

from __future__ import annotations

import numpy as np
import open_clip
import pyarrow as pa
import pytest
import torch

from curation.arrowutil import to_array
from curation.config import ConfigError
from curation.models import aesthetic
from curation.models.clip import ClipModel
from curation.models.realism import RealismScorer, embed_classes
from curation.schema import arrow_type, clip_type
from curation.stages.dag import load_config
from curation.stages.quality import QualityStage

from .media import image_table, jpeg


@pytest.fixture(scope="module")
def embedded(embed_stage, photos):
    names = ["astronaut", "coffee", "bus", "chelsea"]
    table = image_table([jpeg(photos[n]) for n in names] + [b"GIF89a truncated"])
    return embed_stage.process(table)


def test_embed_writes_unit_float16_vectors_as_a_fixed_size_list(embedded):
    col = embedded["clip"]
    assert col.type == clip_type(512)  # dense [N, 512] for readers (semdedup, cluster)
    assert pa.types.is_float16(arrow_type("clip").value_type) and col.type.value_type == arrow_type("clip").value_type
    assert embedded["reject"] == [None] * 4 + ["error:embed"]
    assert col.null_count == 1 and not col[4].is_valid  # the bad row is null, not a zero vector
    dense = np.asarray(col.slice(0, 4).flatten().to_numpy(zero_copy_only=False), np.float32).reshape(4, 512)
    assert np.linalg.norm(dense, axis=1) == pytest.approx(1.0, abs=2e-3)
    assert len({v.tobytes() for v in dense}) == 4  # different images, different vectors


def test_embed_uses_the_models_own_transform_on_a_reduced_decode(embed_stage, photos, monkeypatch):
    sizes = []
    real = embed_stage.model.preprocess
    monkeypatch.setattr(embed_stage.model, "preprocess", lambda im: sizes.append(im.size) or real(im))
    embed_stage.process(image_table([jpeg(np.asarray(np.kron(photos["astronaut"][:256, :256],
                                                             np.ones((4, 4, 1), np.uint8))))]))  # 1024 px
    (w, h), = sizes
    assert 224 <= min(w, h) < 1024  # DCT-scaled: covers 224, never the full decode
    # exactly the transform the pretrained tag defines (normalisation, resize mode, interpolation)
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    expected = open_clip.image_transform(224, is_train=False, mean=tag["mean"], std=tag["std"],
                                         resize_mode=tag["resize_mode"], interpolation=tag["interpolation"])
    assert repr(real) == repr(expected)


def test_quality_scores_come_from_stored_vectors_without_running_clip(quality_stage, embedded, monkeypatch):
    """quality is built (fixture) and run here with every image path of open_clip booby-trapped."""
    calls = quality_stage.image_tower_calls
    assert calls["image"] == 0  # nothing at start-up

    def trap(*a, **k):
        calls["image"] += 1
        raise AssertionError("quality ran the CLIP image tower")

    monkeypatch.setattr(ClipModel, "encode_images", trap)
    monkeypatch.setattr(open_clip.model.CLIP, "encode_image", trap)
    stage = quality_stage
    assert "image" not in stage.required_columns() and stage.requires == ("clip",)
    table = pa.table({"clip": embedded["clip"].slice(0, 4)})  # the stored column, nothing else
    out = stage.process(table)
    assert calls["image"] == 0
    for col in stage.produces:
        assert to_array(col, out[col]).type == arrow_type(col)
    aes, real = np.array(out["aesthetic"]), np.array(out["realism"])
    assert ((real > 0) & (real < 1)).all()
    # the aesthetic score is the head applied to the (renormalised) stored vector
    v = np.asarray(table["clip"].combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(4, 512)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    lin = stage.head.net
    assert aes == pytest.approx((v @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()).ravel(), abs=1e-4)


def test_quality_text_tower_is_the_same_random_clip_as_embed(embed_stage, quality_stage, photos):
    """`weights: random` is seeded: quality's text embeddings live in embed's (random) space."""
    from PIL import Image

    p = embed_stage.params  # embed's model may have dropped its text tower: build the whole one again
    whole = ClipModel(p.model, p.pretrained, None, seed=embed_stage.config.run.seed)
    image = [Image.fromarray(photos["coffee"])]
    assert whole.encode_images(image) == pytest.approx(embed_stage.model.encode_images(image), abs=1e-6)
    same = RealismScorer(*embed_classes(whole))
    assert same.classes == pytest.approx(quality_stage.realism.classes, abs=1e-5)


def test_embed_drops_the_text_tower_once_qualitys_prompts_are_cached(monkeypatch, tmp_path, photos):
    from curation.stages.dag import get_stage

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))  # nothing cached yet
    cfg = load_config(None, ["embed.weights=random", "quality.weights=random"])
    cold = get_stage("embed")(cfg)
    cold.setup()
    assert cold.model.model.transformer is not None  # a fused quality may need it for its prompts
    get_stage("quality")(cfg).setup()  # caches the prompts' class embeddings
    warm = get_stage("embed")(cfg)
    warm.setup()
    assert warm.model.model.transformer is None and warm.model.model.token_embedding is None
    with pytest.raises(RuntimeError, match="without its text tower"):
        warm.model.encode_texts(["a photo"])

    def params(stage):
        return sum(t.numel() for t in stage.model.model.parameters())

    assert params(cold) - params(warm) > 30_000_000  # ViT-B-32's text tower: 63M
    table = image_table([jpeg(photos[n]) for n in ["astronaut", "bus"]])
    assert warm.process(table)["clip"].equals(cold.process(table)["clip"])  # the image tower is untouched


def test_quality_rejects_a_null_vector_row_alone(quality_stage, embedded):
    out = quality_stage.process(pa.table({"clip": embedded["clip"].slice(2, 3)}))  # bus, chelsea, bad
    assert out["reject"] == [None, None, "error:quality"] and out["aesthetic"][2] is None


def test_head_and_clip_width_mismatch_is_a_config_error_at_start_up():
    cfg = load_config(None, ["embed.weights=random", "quality.weights=random", "quality.head=improved-mlp-l14"])
    with pytest.raises(ConfigError, match="768-d CLIP embeddings but embed.model ViT-B-32 gives 512-d"):
        QualityStage(cfg).check()
    cfg = load_config(None, ["embed.model=RN50", "embed.pretrained=openai", "embed.weights=random"])
    with pytest.raises(ConfigError, match="no LAION aesthetic head for CLIP 'RN50'"):
        QualityStage(cfg).check()


def test_released_head_layouts_load_strictly(tmp_path):
    """The checkpoints' key names (LAION linear: weight/bias; improved MLP: layers.0..7) match ours."""
    for name in ("laion-linear-b32", "improved-mlp-l14"):
        spec = aesthetic.HEADS[name]
        path = tmp_path / spec.file
        torch.save({k: torch.full_like(v, 0.01) for k, v in aesthetic.build(spec).state_dict().items()}, path)
        head = aesthetic.AestheticHead(spec, str(path))
        score = head(np.full((2, spec.dim), 1 / np.sqrt(spec.dim), np.float32))
        assert score.shape == (2,) and score[0] == pytest.approx(score[1])
    assert set(aesthetic.build(aesthetic.HEADS["improved-mlp-l14"]).state_dict()) == {
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


def test_staged_head_in_curate_weights_is_used_instead_of_random(tmp_path, monkeypatch, embedded):
    spec = aesthetic.HEADS["laion-linear-b32"]
    w = torch.linspace(-1, 1, 512).reshape(1, 512)
    torch.save({"weight": w, "bias": torch.tensor([5.0])}, tmp_path / spec.file)
    monkeypatch.setenv("CURATE_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(RealismScorer, "__init__", lambda self, classes, scale: setattr(self, "classes", None))
    monkeypatch.setattr(RealismScorer, "__call__", lambda self, e: np.zeros(len(e), np.float32))
    stage = QualityStage(load_config(None, ["embed.weights=random"]))  # head from $CURATE_WEIGHTS
    assert not stage.weight_files()[1].random
    stage.check()
    stage.setup()
    out = stage.process(pa.table({"clip": embedded["clip"].slice(0, 1)}))
    v = np.asarray(embedded["clip"][0].as_py(), np.float32)
    expected = float((w.numpy() @ (v / np.linalg.norm(v)))[0]) + 5.0
    assert out["aesthetic"][0] == pytest.approx(expected, abs=1e-3)
