"""The Sapiens2 backbone: released parameter counts, layer layout, RoPE, masking."""

from __future__ import annotations

import math

import pytest
import torch

from curation.training.backbone import SIZES, build_backbone, list_sizes
from curation.training.layers import Rope2D, apply_rope

pytestmark = pytest.mark.timeout(60)

# Released Sapiens2 parameter counts (backbone only).
RELEASED = {
    "sapiens2-0.4b": 0.398e9,
    "sapiens2-0.8b": 0.818e9,
    "sapiens2-1b": 1.462e9,
    "sapiens2-5b": 5.071e9,
}


# Exact counts of the released model code (facebookresearch/sapiens2 standalone `Sapiens2`, commit
# 3098c146, built on the meta device); the README's rounded figures above count slightly more.
RELEASED_EXACT = {
    "sapiens2-0.1b": 113_993_472,
    "sapiens2-0.4b": 395_450_368,
    "sapiens2-0.8b": 814_283_520,
    "sapiens2-1b": 1_455_474_176,
    "sapiens2-1b-4k": 1_606_588_928,
    "sapiens2-5b": 5_066_902_976,
}


@pytest.mark.parametrize("name", sorted(RELEASED_EXACT))
def test_parameter_count_is_the_release_codes_exactly(name):
    with torch.device("meta"):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == RELEASED_EXACT[name]


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_parameter_count_matches_release(name):
    with torch.device("meta"):
        model = build_backbone(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / RELEASED[name] - 1) < 0.01, (
        f"{name}: {count / 1e9:.3f}B vs {RELEASED[name] / 1e9:.3f}B"
    )


def test_named_sizes_have_the_released_shapes():
    expected = {
        "sapiens2-0.1b": (768, 12, 12),
        "sapiens2-0.4b": (1024, 24, 16),
        "sapiens2-0.8b": (1280, 32, 16),
        "sapiens2-1b": (1536, 40, 24),
        "sapiens2-5b": (2432, 56, 32),
    }
    for name, (dim, depth, heads) in expected.items():
        s = SIZES[name]
        assert (s.dim, s.depth, s.heads) == (dim, depth, heads)
    assert "sapiens2-1b-4k" in list_sizes()
    with pytest.raises(ValueError, match="unknown model"):
        build_backbone("sapiens2-2b")


def test_gqa_only_in_the_middle_layers():
    with torch.device("meta"):
        model = build_backbone("sapiens2-0.4b")
    kv = [blk.attn.num_kv_heads for blk in model.blocks]
    assert kv[:8] == [16] * 8 and kv[-8:] == [16] * 8
    assert kv[8:-8] == [8] * (24 - 16)
    blk = model.blocks[10]
    # SwiGLU hidden is the full 4x width; fused q/k/v shrinks by the halved K/V heads.
    assert blk.mlp.w12.out_features == 2 * 4 * 1024 and blk.mlp.w3.in_features == 4 * 1024
    assert blk.attn.qkv.out_features == 1024 + 2 * 512
    assert model.num_prefix_tokens == 1 + 8


def test_tiny_forward_shapes_and_masked_subset():
    torch.manual_seed(0)
    model = build_backbone("sapiens2-tiny").eval()
    images = torch.randn(2, 3, 64, 48)
    out = model(images)
    assert out["grid"] == (4, 3)
    assert out["tokens"].shape == (2, 9 + 12, 64) and out["cls"].shape == (2, 64)
    assert model.feature_map(images).shape == (2, 64, 4, 3)
    # Encoding every token through `keep` in grid order is the unmasked forward.
    keep = torch.arange(12).expand(2, -1)
    assert torch.allclose(model(images, keep)["tokens"], out["tokens"], atol=1e-5)
    # A visible subset is encoded with its own grid positions: permuting `keep` permutes the output.
    keep = torch.tensor([[0, 5, 7], [11, 2, 3]])
    a = model(images, keep)["patch"]
    b = model(images, keep.flip(1))["patch"]
    assert a.shape == (2, 3, 64)
    assert torch.allclose(a, b.flip(1), atol=1e-5)


@pytest.mark.parametrize("pairing", ["halves", "pairs"])
def test_rope_rotates_grid_tokens_by_position_and_leaves_prefix_alone(pairing):
    rope = Rope2D(head_dim=16, dtype="fp32")
    rotation = rope(4, 4, num_prefix=2)
    assert rotation.cos.shape == rotation.sin.shape == (1, 1, 2 + 16, 8)
    q = torch.randn(1, 1, 18, 16)
    rotated = apply_rope(q, rotation, pairing)
    assert torch.equal(rotated[:, :, :2], q[:, :, :2])
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation
    # Relative: the score between two rotated vectors depends on their offset, not their place.
    v = torch.randn(16)
    x = v.expand(1, 1, 18, 16)
    r = apply_rope(x, rotation, pairing)[0, 0, 2:].view(4, 4, 16)
    assert torch.allclose(r[0, 0] @ r[0, 1], r[2, 2] @ r[2, 3], atol=1e-4)
    assert not torch.allclose(r[0, 0] @ r[0, 1], r[0, 0] @ r[0, 3], atol=1e-3)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_rope_is_the_released_rotate_half_in_the_released_dtype(dtype):
    """The released formula, written out from its definition: periods base^(2i/(Dh/2)), angles
    2 pi coord / period tiled over both halves, x * cos + rotate_half(x) * sin, all in `dtype`."""
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    Dh, h, w = 16, 3, 4
    periods = 100.0 ** (2 * torch.arange(Dh // 4, dtype=dt) / (Dh // 2))
    ys, xs = torch.arange(0.5, h, dtype=dt) / h, torch.arange(0.5, w, dtype=dt) / w
    coords = 2.0 * torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).flatten(0, 1) - 1.0
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
    x = torch.randn(2, 3, h * w, Dh)
    xr = x.to(dt)
    half = torch.cat([-xr[..., Dh // 2 :], xr[..., : Dh // 2]], dim=-1)
    expected = (xr * torch.cos(angles) + half * torch.sin(angles)).float()

    rope = Rope2D(Dh, dtype=dtype)
    assert rope.periods.dtype == dt and torch.equal(rope.periods, periods)
    got = apply_rope(torch.cat([torch.randn(2, 3, 1, Dh), x], dim=2), rope(h, w, num_prefix=1))
    assert torch.equal(got[:, :, 1:], expected)


@pytest.mark.parametrize(("kv_heads", "pairing"), [(4, "halves"), (2, "halves"), (2, "pairs")])
def test_fused_cpu_kernels_match_the_plain_ops(kv_heads, pairing):
    """The hand-fused CPU autograd functions (RMSNorm, QK-norm + RoPE, SwiGLU) and SDPA's GQA path
    give the plain-op results and gradients, with and without MAE's per-image `keep` rotations."""
    from curation.training.kernels import fused_cpu_kernels
    from curation.training.layers import Block

    torch.manual_seed(0)
    blk = Block(64, 4, kv_heads, layer_scale_ffn=True, rope_pairing=pairing)
    for p in blk.parameters():  # away from the init (unit gains, 1e-4 LayerScale) to test every term
        torch.nn.init.uniform_(p, 0.5, 1.5) if p.ndim == 1 else torch.nn.init.normal_(p, std=0.3)
    rope = Rope2D(16, dtype="fp32")  # the fused path rotates in fp32
    x0, g = torch.randn(2, 2 + 12, 64), torch.randn(2, 2 + 12, 64)
    keep = torch.tensor([[0, 3, 5, 6, 7, 8, 1, 2, 4, 9, 10, 11], [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    for rotation in (rope(3, 4, num_prefix=2), rope(3, 4, num_prefix=2, keep=keep)):
        results = []
        for fused in (False, True):
            with fused_cpu_kernels(fused):
                x = x0.clone().requires_grad_()
                y = blk(x, rotation)
                y.backward(g)
                results.append([y, x.grad] + [p.grad.clone() for p in blk.parameters()])
                blk.zero_grad(set_to_none=True)
                with torch.no_grad():  # the plain-op forward used without autograd (and by jit.trace)
                    assert torch.allclose(blk(x0, rotation), y, rtol=1e-4, atol=1e-4)
        for ref, got in zip(*results):  # fp32 rounding only: relative to each tensor's scale
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            assert err < 1e-5, err


def test_swiglu_split_projection_matches_the_fused_linear():
    """`SwiGLUProjFn` (gate and value GEMMs into separate buffers) equals `w12` + SwiGLU, with and
    without bias, and when only some inputs want gradients (frozen input, frozen weights)."""
    from curation.training.kernels import fused_cpu_kernels
    from curation.training.layers import SwiGLUFFN

    torch.manual_seed(0)
    for bias in (True, False):
        ffn = SwiGLUFFN(32, 64, bias=bias)
        for p in ffn.parameters():
            torch.nn.init.normal_(p, std=0.5)
        x0, g = torch.randn(3, 5, 32), torch.randn(3, 5, 32)
        for x_grad, w_grad in ((True, True), (False, True), (True, False)):
            results = []
            for fused in (False, True):
                ffn.w12.requires_grad_(w_grad)
                with fused_cpu_kernels(fused):
                    x = x0.clone().requires_grad_(x_grad)
                    y = ffn(x)
                    y.backward(g)
                grads = [x.grad] + [p.grad for p in ffn.parameters()]
                results.append([y] + [t.clone() for t in grads if t is not None])
                ffn.zero_grad(set_to_none=True)
            assert len(results[0]) == len(results[1])
            for ref, got in zip(*results):
                err = ((got - ref).abs().max() / ref.abs().max()).item()
                assert err < 1e-5, (bias, x_grad, w_grad, err)
