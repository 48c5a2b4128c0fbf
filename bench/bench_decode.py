"""Decode-stage throughput per core, as a ratio to a bare reduced-size JPEG decode of the same
files in the same process (target >= 0.8).

Baseline: PIL open + draft to 1/4 + np.asarray, the cheapest way to look at a JPEG's pixels
(ENV.md: ~200 img/s/core). The stage does more (header probe, EXIF, bomb/size checks, a full
entropy decode at 1/8 scale to catch truncation) and must stay close to it.

    python bench/bench_decode.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

import numpy as np
import pyarrow as pa
from PIL import Image


def bare_decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (im.width // 4, im.height // 4))
    return np.asarray(im.convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp())
    from curation.sample_crawl import sample_items
    from curation.stages.dag import load_config
    from curation.stages.decode import DecodeStage

    files = [d for n, d in sample_items(0).items() if n.endswith(".jpg") and not n.startswith("broken_")]
    stage = DecodeStage(load_config(None, []))
    table = pa.table({"image": pa.array(files, pa.binary())})
    mp = sum(Image.open(io.BytesIO(d)).width * Image.open(io.BytesIO(d)).height for d in files) / len(files) / 1e6
    stage.process(table)  # warm caches
    for d in files:
        bare_decode(d)
    ratios, stage_rates, bare_rates = [], [], []
    for _ in range(args.repeat):  # interleaved so machine noise hits both sides alike
        t0 = time.perf_counter()
        for d in files:
            bare_decode(d)
        t_bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = stage.process(table)
        t_stage = time.perf_counter() - t0
        assert all(r is None for r in out["reject"])
        bare_rates.append(len(files) / t_bare)
        stage_rates.append(len(files) / t_stage)
        ratios.append(t_bare / t_stage)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"files: {len(files)} JPEGs from the sample crawl, mean {mp:.2f} MP")
    print(f"bare draft-1/4 decode: {np.median(bare_rates):.1f} img/s/core")
    print(f"decode stage:          {np.median(stage_rates):.1f} img/s/core")
    print(f"ratio stage/bare (median of {args.repeat}): {np.median(ratios):.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
