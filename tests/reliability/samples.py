"""Read a run's shards back with the real webdataset reader, local or s3:// alike."""

from __future__ import annotations

import tempfile

import webdataset as wds

from curation.io import fs


def read_samples(out: str) -> dict[str, tuple[bytes, bytes]]:
    """key -> (jpg bytes, json bytes) over every shard in OUT/shards/manifest.json; a key seen
    twice fails (each sample once)."""
    manifest = fs.read_json(fs.join(out, "shards", "manifest.json"))
    samples: dict[str, tuple[bytes, bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, shard in enumerate(manifest["shards"]):
            local = f"{tmp}/{i}.tar"
            with open(local, "wb") as f:  # the bytes as stored, fetched through the product's fs layer
                f.write(fs.read_bytes(fs.join(out, "shards", shard["path"])))
            for s in wds.WebDataset([local], shardshuffle=False, empty_check=False):
                assert s["__key__"] not in samples, f"sample {s['__key__']} written twice"
                samples[s["__key__"]] = (s["jpg"], s["json"])
    assert len(samples) == manifest["counts"]["samples"]
    return samples
