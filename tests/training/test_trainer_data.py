"""WebDataset streaming: manifest/pattern resolution, per-rank and per-worker splits, exact resume."""

from __future__ import annotations

import itertools

import pytest
import torch

from curation.training.data import (
    DataPosition,
    MultiCrop,
    PretrainViews,
    SampleStream,
    build_loader,
    resolve_shards,
)
from curation.training.data.shards import count_samples
from curation.training.data.stream import shuffled_samples

pytestmark = pytest.mark.timeout(90)


def test_resolves_manifest_directory_and_patterns(shards):
    from_manifest = resolve_shards(str(shards))
    assert [s.samples for s in from_manifest] == [6] * 4
    assert all(s.url.startswith(str(shards.parent)) for s in from_manifest)  # relative to the manifest
    assert resolve_shards(str(shards.parent)) == from_manifest  # a directory uses its manifest
    brace = resolve_shards(str(shards.parent / "{000000..000003}.tar"))
    glob = resolve_shards(str(shards.parent / "*.tar"))
    assert [s.url for s in brace] == [s.url for s in glob] == [s.url for s in from_manifest]
    assert count_samples(brace[0].url) == 6
    with pytest.raises(ValueError, match="no shards match"):
        resolve_shards(str(shards.parent / "nothing-*.tar"))


@pytest.mark.parametrize("use_manifest", [True, False])
def test_stream_resumes_exactly_at_any_position(shards, use_manifest):
    listed = resolve_shards(str(shards) if use_manifest else str(shards.parent / "*.tar"))
    kw = {"bufsize": 7, "initial": 3, "seed": 11}
    full = [s["__key__"] for s in shuffled_samples(listed, **kw)]
    assert sorted(full) == sorted(f"{s:06d}_{i:04d}" for s in range(4) for i in range(6))  # each once
    assert full != sorted(full)  # shuffled across shards
    for start in range(len(full) + 1):
        assert [s["__key__"] for s in shuffled_samples(listed, start=start, **kw)] == full[start:]


def test_resume_skips_consumed_shards_without_reading_them(shards, monkeypatch):
    from curation.training.data import stream

    listed = resolve_shards(str(shards))
    opened = []
    real = stream.iter_shard
    monkeypatch.setattr(stream, "iter_shard", lambda url: (opened.append(url), real(url))[1])
    rest = list(shuffled_samples(listed, bufsize=2, initial=1, seed=0, start=20))
    assert len(rest) == 4
    assert listed[0].url not in opened  # its samples were all consumed before position 20


def _positions_and_keys(dataset, batches: int, batch_size: int, workers: int, position: DataPosition):
    loader = build_loader(dataset, batch_size, workers)
    seen = []
    for batch in itertools.islice(loader, batches):
        position.update(batch["position"])
        seen.append(batch["global"].sum().item())
    return seen


def _dataset(listed, position, rank=0, world=1):
    crops = MultiCrop((32, 32), (16, 16), 1, jitter_prob=1.0)
    return SampleStream(
        listed,
        PretrainViews(crops),
        position,
        rank=rank,
        world_size=world,
        seed=3,
        shuffle_buffer=5,
        shuffle_initial=2,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resume_continues_the_same_batches(shards, workers):
    listed = resolve_shards(str(shards))
    streams = max(1, workers)
    uninterrupted = _positions_and_keys(
        _dataset(listed, DataPosition(streams)), 9, 2, workers, DataPosition(streams)
    )
    first = DataPosition(streams)
    head = _positions_and_keys(_dataset(listed, DataPosition(streams)), 5, 2, workers, first)
    saved = first.state_dict()
    resumed_position = DataPosition(streams, saved)
    tail = _positions_and_keys(_dataset(listed, resumed_position), 4, 2, workers, resumed_position)
    assert head + tail == uninterrupted  # the same crops of the same samples, in the same order


def test_ranks_and_workers_read_disjoint_shards_covering_all(shards):
    listed = resolve_shards(str(shards))
    seen = {}
    for rank in range(2):
        ds = _dataset(listed, DataPosition(2), rank=rank, world=2)
        for stream in range(2):
            seen[(rank, stream)] = {s.url for s in ds.stream_shards(epoch=0, stream=stream)}
    assert sum(len(v) for v in seen.values()) == 4
    assert set().union(*seen.values()) == {s.url for s in listed}
    # Another epoch deals the shards differently.
    ds = _dataset(listed, DataPosition(2), rank=0, world=2)
    orders = {tuple(s.url for s in ds.stream_shards(epoch=e, stream=0)) for e in range(8)}
    assert len(orders) > 1


def test_multicrop_is_a_function_of_the_seed(photos):
    crops = MultiCrop((64, 48), (32, 24), 3)
    a = crops(photos[0], torch.Generator().manual_seed(5))
    b = crops(photos[0], torch.Generator().manual_seed(5))
    c = crops(photos[0], torch.Generator().manual_seed(6))
    assert a["global"].shape == (2, 3, 64, 48) and a["local"].shape == (3, 3, 32, 24)
    assert torch.equal(a["global"], b["global"]) and torch.equal(a["local"], b["local"])
    assert not torch.equal(a["global"], c["global"])
