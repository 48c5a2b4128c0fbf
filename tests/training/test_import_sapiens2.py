"""`curate train import --from sapiens2`: a checkpoint in the release's key layout converts and loads.

The release's layout is written out here from its key names and shapes (docs/training.md, "Importing
released weights"), not from our converter, at a tiny size: dim 64, 4 layers, 4 heads of 16, the
first and last layer multi-head and the middle two grouped-query (2 K/V heads), 8 storage tokens,
and for the 4K variant a 1-layer tokenizer over 4x4 windows.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from curation.config import ConfigError
from curation.training.heads.model import backbone_from_checkpoint
from curation.training.import_sapiens2 import convert_backbone, import_sapiens2

pytestmark = pytest.mark.timeout(60)

DIM, DEPTH, HEADS, HEAD_DIM, KV_GQA = 64, 4, 4, 16, 2


def release_block(prefix: str, kv_heads: int, qk_norm: bool, layer_scale: bool) -> dict[str, tuple]:
    keys = {
        "ln1.weight": (DIM,),
        "attn.wq.weight": (DIM, DIM),
        "attn.wq.bias": (DIM,),
        "attn.wk.weight": (kv_heads * HEAD_DIM, DIM),
        "attn.wk.bias": (kv_heads * HEAD_DIM,),
        "attn.wv.weight": (kv_heads * HEAD_DIM, DIM),
        "attn.wv.bias": (kv_heads * HEAD_DIM,),
        "attn.proj.weight": (DIM, DIM),
        "attn.proj.bias": (DIM,),
        "ln2.weight": (DIM,),
        "ffn.w12.weight": (2 * 4 * DIM, DIM),
        "ffn.w12.bias": (2 * 4 * DIM,),
        "ffn.w3.weight": (DIM, 4 * DIM),
        "ffn.w3.bias": (DIM,),
    }
    if qk_norm:
        keys |= {"attn.q_norm.weight": (HEAD_DIM,), "attn.k_norm.weight": (HEAD_DIM,)}
    if layer_scale:
        keys["attn.gamma.weight"] = (DIM,)
    return {prefix + k: v for k, v in keys.items()}


def release_layout(tokenizer_layers: int = 0) -> dict[str, tuple]:
    keys: dict[str, tuple] = {
        "patch_embed.projection.weight": (DIM, 3, 16, 16),
        "patch_embed.projection.bias": (DIM,),
        "rope_embed.periods": (HEAD_DIM // 4,),
        "cls_token": (1, 1, DIM),
        "storage_tokens": (1, 8, DIM),
        "ln1.weight": (DIM,),
    }
    for i in range(DEPTH):
        kv = HEADS if i in (0, DEPTH - 1) else KV_GQA
        keys |= release_block(f"blocks.{i}.", kv, qk_norm=True, layer_scale=True)
    if tokenizer_layers:
        keys |= {"tokenizer.local_pos_embed": (1, 1 + 16, DIM), "tokenizer.w_cls": (1, 1, DIM)}
        for j in range(tokenizer_layers):
            keys |= release_block(f"tokenizer.blocks.{j}.", HEADS, qk_norm=False, layer_scale=False)
    return keys


def release_state(tokenizer_layers: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(shape, generator=g) * 0.05 for k, shape in release_layout(tokenizer_layers).items()
    }
    # The release's periods: base 100 ** (2i / (Dh/2)), computed and stored in bf16.
    state["rope_embed.periods"] = 100.0 ** (
        2 * torch.arange(HEAD_DIM // 4, dtype=torch.bfloat16) / (HEAD_DIM // 2)
    )
    return state


@pytest.mark.parametrize("tokenizer_layers", [0, 1])
def test_a_release_layout_checkpoint_converts_and_loads_strictly(tmp_path, tokenizer_layers):
    src = release_state(tokenizer_layers)
    path = tmp_path / "sapiens2_tiny_pretrain.safetensors"
    save_file(src, str(path))
    summary = import_sapiens2(path, tmp_path / "imported.pt")
    assert summary["model"] == "sapiens2-tiny" + ("-4k" if tokenizer_layers else "")
    assert summary["backbone_tensors"] == len(src) and summary["head_tensors_kept_unconverted"] == 0

    backbone, _ = backbone_from_checkpoint(tmp_path / "imported.pt")  # load_state_dict(strict=True)
    assert backbone.arch_options == {
        "rope_pairing": "halves",
        "rope_dtype": "bf16",
        "layer_scale_ffn": False,
        "tokenizer": "released",
    }
    ours = backbone.state_dict()
    assert torch.equal(ours["blocks.1.ls1.gamma"], src["blocks.1.attn.gamma.weight"])
    qkv = torch.cat([src[f"blocks.2.attn.{w}.weight"] for w in ("wq", "wk", "wv")])
    assert torch.equal(ours["blocks.2.attn.qkv.weight"], qkv)
    assert ours["blocks.2.attn.qkv.weight"].shape == (DIM + 2 * KV_GQA * HEAD_DIM, DIM)
    assert torch.equal(ours["norm.weight"], src["ln1.weight"])
    assert torch.equal(ours["register_tokens"], src["storage_tokens"])
    assert not any(k.startswith("blocks.") and k.endswith("ls2.gamma") for k in ours)  # attention only
    if tokenizer_layers:
        assert torch.equal(ours["window_stage.local_pos_embed"], src["tokenizer.local_pos_embed"])
        assert not any("window_stage.blocks.0.attn.q_norm" in k or "window_stage.rope" in k for k in ours)
    side = 256 if tokenizer_layers else 64
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, side, side))
    assert out["tokens"].shape == (1, 9 + 16, DIM) and torch.isfinite(out["tokens"]).all()


def test_a_renamed_missing_extra_or_misshaped_key_is_an_error_naming_it():
    src = release_state()
    renamed = dict(src)
    renamed["blocks.1.attn.ls.weight"] = renamed.pop("blocks.1.attn.gamma.weight")
    with pytest.raises(ConfigError, match=r"blocks\.1\.attn\.ls\.weight"):
        convert_backbone(renamed)

    missing = dict(src)
    del missing["blocks.2.ffn.w3.bias"]
    with pytest.raises(ConfigError, match=r"missing key for 'blocks\.2\.mlp\.w3\.bias'"):
        convert_backbone(missing)

    partial_qkv = dict(src)
    del partial_qkv["blocks.0.attn.wk.weight"]
    with pytest.raises(ConfigError, match=r"missing key 'blocks\.0\.attn\.wk\.weight'"):
        convert_backbone(partial_qkv)

    misshaped = dict(src)
    misshaped["blocks.3.attn.q_norm.weight"] = torch.ones(HEAD_DIM + 1)
    with pytest.raises(ConfigError, match=r"blocks\.3\.attn\.q_norm\.weight"):
        convert_backbone(misshaped)

    periods = dict(src)
    periods["rope_embed.periods"] = src["rope_embed.periods"] * 2
    with pytest.raises(ConfigError, match="periods"):
        convert_backbone(periods)


def test_a_task_checkpoint_converts_its_backbone_and_keeps_its_head(tmp_path, curate_app):
    src = {f"backbone.{k}": v for k, v in release_state().items()}
    src["decode_head.conv_seg.weight"] = torch.randn(29, 64, 1, 1)
    path = tmp_path / "sapiens2_tiny_seg.pth"
    torch.save({"state_dict": src}, path)
    out = tmp_path / "imported.pt"
    result = CliRunner().invoke(
        curate_app, ["train", "import", "--from", "sapiens2", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "imported sapiens2-tiny" in result.output and "1 task-head tensors kept" in result.output
    saved = torch.load(out, weights_only=True)
    assert set(saved["released_head"]) == {"decode_head.conv_seg.weight"}
    backbone, _ = backbone_from_checkpoint(out)
    assert torch.equal(backbone.state_dict()["cls_token"], src["backbone.cls_token"])

    stray = dict(src, **{"neck.weight": torch.zeros(1)})
    torch.save(stray, path)
    result = CliRunner().invoke(curate_app, ["train", "import", str(path), "--out", str(out)])
    # A ConfigError: `curate`'s main turns it into one line and exit 2 (tests/test_cli.py).
    assert isinstance(result.exception, ConfigError) and "neck.weight" in str(result.exception)


def test_pretrain_starts_from_an_imported_backbone(tmp_path, shards, tiny_tree, curate_app):
    import yaml

    from curation.training.backbone import read_backbone_weights
    from curation.training.checkpoint import LAST

    save_file(release_state(seed=3), str(tmp_path / "release.safetensors"))
    imported = tmp_path / "imported.pt"
    import_sapiens2(tmp_path / "release.safetensors", imported)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_tree))
    args = ["train", "pretrain", "--data", str(shards), "--config", str(config), "--init", str(imported)]
    # lr 0: the one step leaves the student (and its EMA teacher) at the imported weights.
    sets = ["--set", "train.steps=1", "--set", "optim.lr=0", "--set", "optim.min_lr=0"]
    result = CliRunner().invoke(curate_app, [*args, "--out", str(tmp_path / "run"), *sets])
    assert result.exit_code == 0, result.output
    weights, _ = read_backbone_weights(imported)
    trained, model_cfg = read_backbone_weights(tmp_path / "run" / LAST)
    assert model_cfg["init"] == str(imported)
    assert trained.keys() == weights.keys()
    assert all(torch.equal(trained[k], weights[k]) for k in weights)

    # An init file of another architecture is refused, naming what differs.
    result = CliRunner().invoke(
        curate_app, [*args, "--out", str(tmp_path / "other"), *sets, "--set", "model.layer_scale_ffn=true"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "layer_scale_ffn is False there, True here" in str(result.exception)
