"""`curate train labels`: labelled WebDataset shards from annotations users already have.

Each source yields one outcome per input item, in a stable order: a sample in the heads' format
(see heads/labels.py) or a reason it was rejected. Nothing is lost: every item ends in a shard or
in `rejects.jsonl` with its reason, and `summary.json` states inputs = written + rejects.

    OUT/000000.tar ...      samples, `samples_per_shard` each
    OUT/manifest.json       the shard stage's format: `curate train head --data OUT/manifest.json`
    OUT/rejects.jsonl       {"item": ..., "reason": ...} per rejected item
    OUT/summary.json        {"kind", "inputs", "written", "rejects": {reason: count}, ...}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.manifests.tar_writer import sample_tar

KINDS = ("pose", "seg", "normal", "pointmap")


@dataclass
class Reject:
    item: str
    reason: str  # a short, countable reason; details go in `detail`
    detail: str = ""


Outcome = dict[str, Any] | Reject  # a sample ({"__key__": ..., "jpg": ..., label files}) or a reject


def write_labelled_shards(outcomes: Iterator[Outcome], out: Path, kind: str, samples_per_shard: int = 1000,
                          notes: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the samples of `outcomes` as shards + manifest and the rejects with their reasons."""
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        path = out / f"{len(entries):06d}.tar"
        with sample_tar(str(path)) as tar:
            for sample in pending:
                tar.write(sample)
        entries.append({"path": path.name, "samples": tar.samples, "bytes": tar.bytes, "sha256": tar.sha256})
        pending.clear()

    with open(out / "rejects.jsonl", "w") as rejects:
        for outcome in outcomes:
            if isinstance(outcome, Reject):
                reasons[outcome.reason] += 1
                rejects.write(json.dumps(outcome.__dict__) + "\n")
                continue
            pending.append(outcome)
            if len(pending) == samples_per_shard:
                flush()
    if pending:
        flush()
    written = sum(e["samples"] for e in entries)
    summary = {"kind": kind, "inputs": written + sum(reasons.values()), "written": written,
               "rejects": dict(sorted(reasons.items())), "shards": len(entries), **(notes or {})}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps({"shards": entries, "counts": {"samples": written},
                                                  "labels": kind}, indent=1))  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
