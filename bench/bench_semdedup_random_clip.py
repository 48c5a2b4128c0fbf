"""Semantic dedup with RANDOM-weight CLIP ViT-B-32 at the default eps (0.05) on the near-duplicate
photo set of the tests: prints pair precision and recall per transform.

What it shows: with random weights, eps = 0.05 joins different photos (random towers put most
photos close together), which is why the suite's own semdedup test uses a tight eps measured on
this set. A figure to read, not a check: it asserts nothing, so it lives here and not in tests/.

    .venv/bin/python bench/bench_semdedup_random_clip.py [--eps 0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS / "global_stages"), str(TESTS)]  # the photo set and its scorers
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=0.05)
    args = ap.parse_args()
    import ray
    from conftest import build_near_dup_rows
    from test_near_dup_quality import clip_rows, final_group, quality, report, semdedup_run

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        rows, clip = clip_rows.__wrapped__(build_near_dup_rows())
        with tempfile.TemporaryDirectory() as cache:
            out = semdedup_run(rows, clip, args.eps, cache)
        precision, recall, pairs = quality(rows, final_group(out, "semdup_of"))
        print(report(f"semdedup eps={args.eps}, RANDOM-WEIGHT CLIP ViT-B-32", precision, recall, pairs))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
