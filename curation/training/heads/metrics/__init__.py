"""Post-training metrics as accumulators: `update(...)` per batch, `compute()` -> dict of floats."""

from curation.training.heads.metrics.dense import AlbedoMetric, NormalMetric, PointmapMetric
from curation.training.heads.metrics.oks import OKSMetric, oks
from curation.training.heads.metrics.seg import SegMetric

__all__ = ["AlbedoMetric", "NormalMetric", "OKSMetric", "PointmapMetric", "SegMetric", "oks"]
