"""KoLeo regulariser (Sablayrolles et al. 2019, as in dinov2's `koleo_loss.py`).

The Kozachenko-Leonenko entropy estimator: -mean log(distance to the nearest other sample) of the
L2-normalised features. Minimising it spreads a batch's [CLS] features over the sphere, which
works against the collapse where every image maps to the same point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def koleo_loss(features: Tensor, eps: float = 1e-8) -> Tensor:
    """features [N, D] (N >= 2) -> scalar: -mean_i log(min_{j != i} ||x_i - x_j||), x L2-normalised."""
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():  # the nearest neighbour is a choice, not a function to differentiate
        sims = x @ x.t()
        sims.fill_diagonal_(-2.0)  # below any cosine: never one's own neighbour
        nearest = sims.argmax(dim=1)  # [N]
    distances = F.pairwise_distance(x, x[nearest], eps=eps)  # [N]
    return -torch.log(distances + eps).mean()
