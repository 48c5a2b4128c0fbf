"""`curate train import --from sapiens2`: released Sapiens2 weights -> our backbone layout.

Input: a released pretrain checkpoint (bare backbone keys, `sapiens2_*_pretrain.safetensors`) or a
released task checkpoint (pose / seg / normal / pointmap: `backbone.*` + `decode_head.*`), as
.safetensors or a torch file (optionally wrapped in `state_dict`, `model` or `teacher`, as the
release's own loader accepts). The size is read from the tensor shapes; every backbone tensor is
mapped, and a key that is missing, left over or of the wrong shape is an error naming it.
Released task heads have no counterpart among our heads: their tensors are kept, unconverted,
under `released_head` in the output and counted on the terminal, never dropped silently.

Key mapping (release -> ours), per global block i and tokenizer block j:

    patch_embed.projection.{weight,bias}   -> patch_embed.{weight,bias}
    cls_token, storage_tokens              -> cls_token, register_tokens
    rope_embed.periods                     -> rope.periods (checked against ours, sets rope_dtype)
    blocks.i.ln1 / ln2 .weight             -> blocks.i.norm1 / norm2 .weight
    blocks.i.attn.{wq,wk,wv}.{weight,bias} -> blocks.i.attn.qkv.{weight,bias} (rows q, k, v)
    blocks.i.attn.{q_norm,k_norm,proj}.*   -> same names
    blocks.i.attn.gamma.weight             -> blocks.i.ls1.gamma
    blocks.i.ffn.{w12,w3}.{weight,bias}    -> blocks.i.mlp.{w12,w3}.{weight,bias}
    ln1.weight                             -> norm.weight
    tokenizer.w_cls, tokenizer.local_pos_embed -> window_stage.window_cls, window_stage.local_pos_embed
    tokenizer.blocks.j.*                   -> window_stage.blocks.j.* (as blocks, no q/k-norm, no gamma)

The output is a torch file {"config": {"model": {...}}, "backbone": state_dict, ...} that
`curate train pretrain --set model.init=FILE` and `curate train head --backbone FILE` accept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from curation.config import ConfigError
from curation.training.backbone import SIZES, Sapiens2ViT, build_backbone
from curation.training.layers import Rope2D

_BLOCK_RENAMES = {
    "ln1.weight": "norm1.weight",
    "ln2.weight": "norm2.weight",
    "attn.q_norm.weight": "attn.q_norm.weight",
    "attn.k_norm.weight": "attn.k_norm.weight",
    "attn.proj.weight": "attn.proj.weight",
    "attn.proj.bias": "attn.proj.bias",
    "attn.gamma.weight": "ls1.gamma",
    "ffn.w12.weight": "mlp.w12.weight",
    "ffn.w12.bias": "mlp.w12.bias",
    "ffn.w3.weight": "mlp.w3.weight",
    "ffn.w3.bias": "mlp.w3.bias",
}
_TOP_RENAMES = {
    "patch_embed.projection.weight": "patch_embed.weight",
    "patch_embed.projection.bias": "patch_embed.bias",
    "cls_token": "cls_token",
    "storage_tokens": "register_tokens",
    "ln1.weight": "norm.weight",
    "tokenizer.w_cls": "window_stage.window_cls",
    "tokenizer.local_pos_embed": "window_stage.local_pos_embed",
}
HEAD_PREFIXES = ("decode_head.", "head.")


def read_release_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The flat tensor dict of a released checkpoint, unwrapped the way the release's loader does."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            return state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a tensor dict (nor one wrapped in state_dict / model / teacher)")
    return state


def split_release_keys(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(backbone tensors with the `backbone.` prefix removed, task-head tensors)."""
    prefixed = any(k.startswith("backbone.") for k in state)
    backbone, head = {}, {}
    for key, value in state.items():
        if key.startswith(HEAD_PREFIXES):
            head[key] = value
        elif prefixed and key.startswith("backbone."):
            backbone[key.removeprefix("backbone.")] = value
        elif prefixed:
            raise ConfigError(f"unexpected key {key!r}: neither backbone.* nor a task head's")
        else:
            backbone[key] = value
    return backbone, head


def infer_release_size(src: dict[str, Tensor]) -> tuple[str, int]:
    """Our size name and the tokenizer depth of a released backbone, from its tensor shapes."""
    for key in ("cls_token", "blocks.0.attn.q_norm.weight"):
        if key not in src:
            raise ConfigError(f"missing key {key!r}: not a released Sapiens2 backbone")
    dim, head_dim = src["cls_token"].shape[-1], src["blocks.0.attn.q_norm.weight"].shape[0]
    depth = 1 + max(int(m.group(1)) for k in src if (m := re.match(r"blocks\.(\d+)\.", k)))
    window = [int(m.group(1)) for k in src if (m := re.match(r"tokenizer\.blocks\.(\d+)\.", k))]
    window_layers = 1 + max(window) if window else 0
    for name, size in SIZES.items():
        if (size.dim, size.depth, size.heads) == (dim, depth, dim // head_dim):
            return name + ("-4k" if window_layers else ""), window_layers
    raise ConfigError(f"no named size has dim {dim}, depth {depth}, {dim // head_dim} heads")


def _map_block(src: dict[str, Tensor], s: str, d: str, out: dict[str, Tensor], used: set[str]) -> None:
    """One release block at prefix `s` -> ours at prefix `d`: q/k/v rows concatenated, rest renamed."""
    for part in ("weight", "bias"):
        keys = [f"{s}attn.{w}.{part}" for w in ("wq", "wk", "wv")]
        present = [k for k in keys if k in src]
        if present:
            missing = sorted(set(keys) - set(present))
            if missing:
                raise ConfigError(f"missing key {missing[0]!r}")
            out[f"{d}attn.qkv.{part}"] = torch.cat([src[k] for k in keys])
            used.update(keys)
    for theirs, ours in _BLOCK_RENAMES.items():
        if s + theirs in src:
            out[d + ours] = src[s + theirs]
            used.add(s + theirs)


def convert_backbone(src: dict[str, Tensor]) -> tuple[Sapiens2ViT, dict[str, Any]]:
    """A released backbone state dict -> our backbone with those weights (loaded strictly), and
    its config.model mapping. Raises ConfigError naming any missing, extra or mis-shaped key."""
    name, window_layers = infer_release_size(src)
    periods = src.get("rope_embed.periods")
    if periods is None:
        raise ConfigError("missing key 'rope_embed.periods'")
    rope_dtype = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(periods.dtype)
    if rope_dtype is None:
        raise ConfigError(f"rope_embed.periods has dtype {periods.dtype}; the release writes bf16 or fp32")
    options = {
        "rope_pairing": "halves",
        "rope_dtype": rope_dtype,
        "layer_scale_ffn": False,
        "tokenizer": "released",
    }
    with torch.device("meta"):  # shapes and names only; the weights come from the checkpoint
        model = build_backbone(name, window_layers=window_layers, **options)
    expected = model.state_dict()

    out: dict[str, Tensor] = {}
    used: set[str] = {"rope_embed.periods"}
    for theirs, ours in _TOP_RENAMES.items():
        if theirs in src:
            out[ours] = src[theirs]
            used.add(theirs)
    for i in range(model.depth):
        _map_block(src, f"blocks.{i}.", f"blocks.{i}.", out, used)
    for j in range(window_layers):
        _map_block(src, f"tokenizer.blocks.{j}.", f"window_stage.blocks.{j}.", out, used)

    extra = sorted(set(src) - used)
    if extra:
        raise ConfigError(f"unexpected key {extra[0]!r} ({len(extra)} in all) in a {name} checkpoint")
    out["rope.periods"] = periods
    missing = sorted(set(expected) - set(out))
    if missing:
        raise ConfigError(f"missing key for {missing[0]!r} ({len(missing)} in all) in a {name} checkpoint")
    for key, value in out.items():
        if value.shape != expected[key].shape:
            raise ConfigError(
                f"{key}: shape {tuple(value.shape)} in the checkpoint, {name} has {tuple(expected[key].shape)}"
            )

    reference = Rope2D(model.rope.head_dim, dtype=rope_dtype).periods
    if not torch.equal(periods, reference):
        raise ConfigError("rope_embed.periods differ from RoPE base 100 (the released setting)")
    # assign=True: the model takes the converted tensors themselves, no second copy of a 5B model.
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in out.items()}, strict=True, assign=True)
    return model, {"name": name, "window_layers": window_layers or None, **options}


def import_sapiens2(src_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Convert a released checkpoint into `out_path`; returns a summary for the terminal."""
    state = read_release_checkpoint(src_path)
    backbone_src, head = split_release_keys(state)
    model, model_cfg = convert_backbone(backbone_src)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "config": {"model": model_cfg},
            "backbone": model.state_dict(),
            "released_head": head,
            "source": {"format": "sapiens2", "path": str(src_path), "tensors": len(state)},
        },
        out_path,
    )
    return {
        "model": model_cfg["name"],
        "backbone_tensors": len(backbone_src),
        "head_tensors_kept_unconverted": len(head),
        "params": sum(p.numel() for p in model.parameters()),
        "out": str(out_path),
    }
