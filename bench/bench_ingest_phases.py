"""CPU milliseconds per image of each phase of URL ingest, in one process without Ray: fetch
(requests through the checked-address session, 16 threads), sha1, sniff (header probe),
validate (the 1/8-scale decode), Parquet write of the bytes, tar write. The gap between their sum
and `bench_ingest_vs_img2dataset.py`'s CPU per image is Ray's share (start-up, scheduling,
object store, task and completion-record overhead).

    python bench/bench_ingest_phases.py [--n 1000] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_corpus import build_corpus, serve


def timed(label: str, n: int, fn, results: dict) -> object:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    results[label] = cpu / n * 1000
    print(f"{label:>14}: {cpu / n * 1000:6.2f} CPU-ms/img  ({wall / n * 1000:6.2f} wall-ms/img)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--scratch", type=Path, default=Path.home() / ".cache" / "curation-bench")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.imaging import probe
    from curation.io.http import fetch, new_session
    from curation.manifests.tar_writer import sample_tar
    from curation.runner.store import parquet_options
    from curation.stages.dag import load_config
    from curation.stages.decode import DecodeStage
    from curation.stages.ingest import IngestStage

    corpus = build_corpus(args.scratch / f"corpus-{args.photos}", args.photos)
    cfg = load_config(None, ["ingest.allow_networks=[127.0.0.0/8]", "ingest.retries=0"])
    policy = IngestStage(cfg).policy()
    decode = DecodeStage(cfg)
    r: dict[str, float] = {}
    with serve(corpus) as base:
        urls = [f"{base}/img/{k}.jpg" for k in range(args.n)]
        with new_session(policy) as session, ThreadPoolExecutor(16) as pool:
            got = timed("fetch", args.n, lambda: list(pool.map(lambda u: fetch(session, u, policy), urls)), r)
    data = [d for d, reason in got if d is not None]
    assert len(data) == args.n, "some fetches failed"
    timed("sha1", args.n, lambda: [hashlib.sha1(d).hexdigest() for d in data], r)
    timed("sniff", args.n, lambda: [probe(d) for d in data], r)
    timed("validate", args.n, lambda: [decode.validate(d) for d in data], r)
    table = pa.table({"id": [str(i) for i in range(len(data))], "image": data})
    opts = parquet_options(table)  # what RunStore.write_part uses
    timed("parquet write", args.n, lambda: pq.write_table(table, io.BytesIO(), **opts), r)
    with tempfile.TemporaryDirectory() as tmp:
        def tars() -> None:
            with sample_tar(os.path.join(tmp, "000000.tar")) as tar:
                for i, d in enumerate(data):
                    tar.write({"__key__": f"{i:06d}", "jpg": d, "json": {"i": i}})

        timed("tar write", args.n, tars, r)
    total = sum(r.values())
    print(f"{'sum':>14}: {total:6.2f} CPU-ms/img = {1000 / total:.0f} images per CPU-second without Ray")


if __name__ == "__main__":
    main()
