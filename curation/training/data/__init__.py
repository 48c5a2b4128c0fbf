"""WebDataset streaming for the trainer: shard resolution, resumable shuffled streams, multi-crop."""

from curation.training.data.augment import MultiCrop
from curation.training.data.loader import (
    DataPosition,
    PretrainViews,
    SampleStream,
    build_loader,
    decode_image,
    num_streams_for,
)
from curation.training.data.shards import Shard, resolve_shards
from curation.training.data.stream import shuffled_samples

__all__ = [
    "DataPosition",
    "MultiCrop",
    "PretrainViews",
    "SampleStream",
    "Shard",
    "build_loader",
    "decode_image",
    "num_streams_for",
    "resolve_shards",
    "shuffled_samples",
]
