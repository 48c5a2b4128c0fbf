"""Our backbone against the released Sapiens2 model code, on the same weights, in fp32.

Needs a checkout of facebookresearch/sapiens2 OUTSIDE this repository (the project never depends
on it); only its self-contained `sapiens/backbones/standalone/sapiens2.py` is imported, which
needs nothing but torch:

    git clone https://github.com/facebookresearch/sapiens2 /tmp/ref/sapiens2
    python bench/sapiens2_equivalence.py --release /tmp/ref/sapiens2 [--sizes 0.1b,0.4b,0.4b-4k]

For each size the release's model is built at its own random init, its state dict goes through
`curate train import`'s converter into ours, and both run the same input. Two weight sets:
"release init" (as constructed: LayerScale 1e-4 damps the attention branch) and "perturbed"
(every norm gain and LayerScale drawn from U(0.5, 1.5), every bias from N(0, 0.02), so every
term of the block reaches the output). Two RoPE dtypes: the release's default bf16 and fp32.
Prints the max abs difference of the final tokens (after the last norm) and of the [CLS] token,
and the release's own noise floor: its output moved by a one-ulp change of the input (the bf16
RoPE rounds q and k, so fp32 noise of any origin can flip a bf16 rounding there).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

from curation.training.import_sapiens2 import convert_backbone

STANDALONE = "sapiens/backbones/standalone/sapiens2.py"


def load_release(root: Path):
    spec = importlib.util.spec_from_file_location("release_sapiens2", root / STANDALONE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1 and name.endswith("weight") and "proj" not in name:  # norm gains, LayerScale
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def compare(release, size: str, rope_dtype: str, perturbed: bool, hw: tuple[int, int]) -> dict:
    arch = "sapiens2_" + size.removesuffix("-4k")
    torch.manual_seed(0)
    theirs = release.Sapiens2(
        arch=arch,
        img_size=hw,
        use_tokenizer=size.endswith("-4k"),
        out_type="raw",
        pos_embed_rope_dtype=rope_dtype,
    ).eval()
    if perturbed:
        perturb(theirs, seed=1)
    images = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = theirs(images)[0]  # [B, 1 + 8 + N, D] after the final norm
        # The release against itself, its input moved by one fp32 ulp: its own rounding noise floor.
        nudged = torch.nextafter(images, torch.full_like(images, float("inf")))
        self_diff = (theirs(nudged)[0] - ref).abs().max().item()
    state = theirs.state_dict()  # the converter assigns these tensors: no second copy of the weights
    del theirs
    ours, model_cfg = convert_backbone(state)
    ours.eval()
    with torch.no_grad():
        got = ours(images)["tokens"]
    diff = (got - ref).abs()
    return {
        "size": size,
        "ours": model_cfg["name"],
        "rope_dtype": rope_dtype,
        "weights": "perturbed" if perturbed else "release init",
        "input": f"{hw[0]}x{hw[1]}",
        "tokens": tuple(ref.shape),
        "max_abs_diff": diff.max().item(),
        "max_abs_diff_cls": diff[:, 0].max().item(),
        "max_abs_ref": ref.abs().max().item(),
        "release_vs_itself_1ulp_input": self_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="checkout of facebookresearch/sapiens2")
    parser.add_argument("--sizes", default="0.1b,0.4b,0.4b-4k")
    parser.add_argument(
        "--cases",
        default="bf16:init,bf16:perturbed,fp32:init,fp32:perturbed",
        help="rope dtype : weights pairs to run",
    )
    args = parser.parse_args()
    release = load_release(args.release)
    commit = subprocess.run(
        ["git", "-C", str(args.release), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"release commit {commit or 'unknown'}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for size in args.sizes.split(","):
        hw = (256, 192) if size.endswith("-4k") else (128, 96)
        for case in args.cases.split(","):
            rope_dtype, weights = case.split(":")
            t0 = time.perf_counter()
            row = compare(release, size, rope_dtype, weights == "perturbed", hw)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(row, flush=True)


if __name__ == "__main__":
    sys.exit(main())
