"""A shuffled sample stream over shards that can restart at any position, exactly.

webdataset's buffer shuffle has no checkpointable state. But its choices depend only on its seed
and on how many items it has been given, never on their content. So we run `wds.shuffle` over
sample *identities* (shard, index-in-shard), which needs only the per-shard counts, and fetch the
bytes of each identity as the shuffle asks for it. To resume at position n we replay the
identity shuffle n steps (microseconds each, no I/O), skip every shard whose samples were all
consumed, and re-read only the shards that still had samples in the buffer, dropping the samples
already consumed. The resumed stream is the uninterrupted one from position n on, sample for
sample, and no consumed sample is yielded again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import webdataset as wds

from curation.training.data.shards import Shard, count_samples, iter_shard

SampleId = tuple[int, int]  # (position of the shard in this epoch's list, index in the shard)


def _identities(shards: list[Shard], counts: dict[int, int]) -> Iterator[SampleId]:
    for s, shard in enumerate(shards):
        counts[s] = shard.samples if shard.samples is not None else count_samples(shard.url)
        for i in range(counts[s]):
            yield (s, i)


def _read(shards: list[Shard], counts: dict[int, int], done: set[int], consumed: dict[int, set[int]]):
    for s, shard in enumerate(shards):
        if s in done:
            continue
        n = -1
        for n, sample in enumerate(iter_shard(shard.url)):
            if n not in consumed.get(s, ()):
                yield (s, n), sample
        if s in counts and n + 1 != counts[s]:
            raise ValueError(f"{shard.url}: the manifest says {counts[s]} samples, the tar holds {n + 1}")


def shuffled_samples(
    shards: list[Shard], *, bufsize: int, initial: int, seed: int, start: int = 0
) -> Iterator[dict[str, Any]]:
    """The samples of `shards` through a `bufsize` shuffle buffer, from stream position `start` on."""
    counts: dict[int, int] = {}
    order = wds.shuffle(bufsize=bufsize, initial=initial, seed=seed)(_identities(shards, counts))
    consumed: dict[int, set[int]] = {}
    done: set[int] = set()
    for _ in range(start):
        s, i = next(order)
        consumed.setdefault(s, set()).add(i)
        if len(consumed[s]) == counts[s]:
            done.add(s)
            del consumed[s]
    reader = _read(shards, counts, done, consumed)
    pending: dict[SampleId, dict[str, Any]] = {}  # read but not yet asked for: at most ~bufsize
    for sample_id in order:
        while sample_id not in pending:
            try:
                read_id, sample = next(reader)
            except StopIteration:
                raise ValueError(
                    f"shard {shards[sample_id[0]].url} holds fewer samples than listed"
                ) from None
            pending[read_id] = sample
        yield pending.pop(sample_id)
