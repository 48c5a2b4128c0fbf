"""Post-training losses, one per task. Each returns a dict with `loss` (the total) and its parts."""

from curation.training.heads.losses.albedo import albedo_loss
from curation.training.heads.losses.normal import normal_loss
from curation.training.heads.losses.pointmap import pointmap_loss
from curation.training.heads.losses.pose import pose_loss
from curation.training.heads.losses.seg import seg_loss

__all__ = ["albedo_loss", "normal_loss", "pointmap_loss", "pose_loss", "seg_loss"]
