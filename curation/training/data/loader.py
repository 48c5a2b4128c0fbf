"""The pretraining data loader: shards split per rank and per worker, shuffled, decoded, multi-cropped.

Each rank runs `num_streams` independent, endless sample streams (one per DataLoader worker).
Stream `k` of rank `r` reads, in epoch `e`, the shards `perm_e[r::world][k::num_streams]` where
`perm_e` is a seeded permutation of all shards, the same on every rank. A stream that finishes its
shards moves on to its next epoch by itself; training counts optimiser steps, so ranks with
unequal shard counts never wait on each other.

Every batch carries its stream's position; the trainer's `DataPosition` keeps the last one per
stream and goes into the checkpoint. On resume each stream restarts exactly there
(`shuffled_samples`). We split shards ourselves rather than with `wds.split_by_node/worker`
because a resumed DataLoader always starts its round-robin at worker 0: mapping worker w to
stream (w + batches_seen) % num_streams keeps the batch order of the uninterrupted run.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curation.training.data.augment import MultiCrop
from curation.training.data.shards import Shard
from curation.training.data.stream import shuffled_samples

log = logging.getLogger(__name__)
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class DataPosition:
    """Per stream (epoch, samples consumed in that epoch), plus batches seen: the loader's resume state."""

    def __init__(self, num_streams: int, state: dict[str, Any] | None = None):
        self.num_streams = num_streams
        self.streams = {k: (0, 0) for k in range(num_streams)}
        self.batches = 0
        if state is not None:
            if state["num_streams"] != num_streams:
                log.warning(
                    "data position saved with %d streams, now %d: restarting the streams at their epoch start",
                    state["num_streams"],
                    num_streams,
                )
                epoch = min(e for e, _ in state["streams"].values())
                self.streams = {k: (epoch, 0) for k in range(num_streams)}
            else:
                self.streams = {int(k): (int(e), int(p)) for k, (e, p) in state["streams"].items()}
                self.batches = int(state["batches"])

    def update(self, position: tuple[int, int, int]) -> None:
        stream, epoch, pos = position
        self.streams[stream] = (epoch, pos)
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        return {"num_streams": self.num_streams, "streams": dict(self.streams), "batches": self.batches}

    @property
    def epoch(self) -> int:
        return min(e for e, _ in self.streams.values())


def decode_image(raw: dict[str, Any], draft: tuple[int, int] | None = None) -> Image.Image:
    """The sample's image, decoded at reduced scale when `draft` (w, h) allows (JPEG DCT scaling)."""
    key = next((k for k in IMAGE_KEYS if k in raw), None)
    if key is None:
        raise ValueError(f"no image ({'/'.join(IMAGE_KEYS)}) in sample")
    image = Image.open(io.BytesIO(raw[key]))
    if draft is not None:
        image.draft("RGB", draft)
    return image.convert("RGB")


class PretrainViews:
    """Decoder for pretraining: the image's multi-crop views."""

    def __init__(self, crops: MultiCrop):
        self.crops = crops

    def __call__(self, raw: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
        return self.crops(decode_image(raw, self.crops.decode_size()), gen)


class SampleStream(IterableDataset):
    """Endless (or `epochs`-long) decoded sample streams; `decode(raw, generator)` makes a sample."""

    def __init__(
        self,
        shards: list[Shard],
        decode: Callable[[dict[str, Any], torch.Generator], dict[str, Any]],
        position: DataPosition,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        shuffle_initial: int = 100,
        shuffle_shards: bool = True,
        epochs: int | None = None,
    ):
        self.shards, self.decode_fn = shards, decode
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.bufsize, self.initial = shuffle_buffer, shuffle_initial
        self.shuffle_shards, self.epochs = shuffle_shards, epochs
        self.num_streams = position.num_streams
        self.start = dict(position.streams)
        self.rotation = position.batches % position.num_streams

    def stream_shards(self, epoch: int, stream: int) -> list[Shard]:
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            random.Random(_seed(self.seed, epoch)).shuffle(order)
        mine = order[self.rank :: self.world_size][stream :: self.num_streams]
        return [self.shards[i] for i in mine]

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        yield from self.stream((worker + self.rotation) % self.num_streams)

    def stream(self, stream: int):
        epoch, pos = self.start[stream]
        while self.epochs is None or epoch < self.epochs:
            shards = self.stream_shards(epoch, stream)
            samples = shuffled_samples(
                shards,
                bufsize=self.bufsize,
                initial=self.initial,
                seed=_seed(self.seed, epoch, self.rank, stream),
                start=pos,
            )
            produced = decoded = 0
            for raw in samples:
                pos += 1
                produced += 1
                item = self.decode(raw, _seed(self.seed, epoch, self.rank, stream, pos))
                if item is not None:
                    decoded += 1
                    item["position"] = (stream, epoch, pos)
                    yield item
            if produced == 0 and pos == 0:
                raise ValueError(f"rank {self.rank} stream {stream}: its shards hold no samples")
            if produced > 0 and decoded == 0:
                # Every sample failed: the next epoch would fail the same way, for ever.
                raise ValueError(
                    f"rank {self.rank} stream {stream}: none of the {produced} samples of epoch {epoch} "
                    "could be decoded (see the warnings above)"
                )
            epoch, pos = epoch + 1, 0

    def decode(self, raw: dict[str, Any], seed: int) -> dict[str, Any] | None:
        try:
            return self.decode_fn(raw, torch.Generator().manual_seed(seed))
        except Exception as exc:  # noqa: BLE001  (a bad sample is skipped, never a crashed run)
            log.warning("skipping sample %s from %s: %s", raw.get("__key__"), raw.get("__url__"), exc)
            return None


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack every tensor field (pretraining: global [B, G, 3, H, W], local [B, L, 3, h, w]); lists
    of other values; `position` is the stream's position after this batch."""
    out: dict[str, Any] = {}
    for key in items[0]:
        if key == "position":
            out[key] = items[-1][key]
        elif isinstance(items[0][key], torch.Tensor):
            out[key] = torch.stack([it[key] for it in items])
        else:
            out[key] = [it[key] for it in items]
    return out


def num_streams_for(num_shards: int, world_size: int, num_workers: int) -> int:
    if num_shards < world_size:
        raise ValueError(
            f"{num_shards} shards cannot feed {world_size} ranks: need at least one shard per rank"
        )
    return max(1, min(num_workers, num_shards // world_size))


def build_loader(
    dataset: SampleStream, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    workers = dataset.num_streams if num_workers > 0 else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0 and dataset.epochs is None,
        prefetch_factor=2 if workers > 0 else None,
        in_order=True,  # batch k comes from worker k % workers: the resume mapping relies on it
        # Its own generator: creating the iterator must not draw from the global RNG, which the
        # checkpoint restores for the model's random masks.
        generator=torch.Generator(),
    )
