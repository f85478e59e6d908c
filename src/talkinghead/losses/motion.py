"""The one term the warp-and-refine generator adds to the paper's objective: a smooth flow.

The motion net corrects an analytic landmark warp; nothing in the content or adversarial terms
stops its residual from tearing the image where a tear happens to lower the loss on one frame.
A total-variation penalty on the residual (in grid units, mean absolute difference of
neighbouring vectors) keeps the correction smooth, as the flow regularisers of the warping
peers do (FOMM's equivariance, TPSMM's smoothness). Not in the paper: its G has no flow.
"""

from __future__ import annotations

from torch import Tensor

from talkinghead.config.loss import LossConfig
from talkinghead.losses.terms import LossTerms


def flow_smoothness_loss(residual: Tensor) -> Tensor:
    """Total variation of a flow field ``[N,2,H,W]``: mean |dx| + mean |dy|."""
    dx = (residual[..., :, 1:] - residual[..., :, :-1]).abs().mean()
    dy = (residual[..., 1:, :] - residual[..., :-1, :]).abs().mean()
    return dx + dy


def flow_terms(config: LossConfig, residual: Tensor) -> LossTerms:
    """Weighted flow smoothness as a ``flow_smoothness`` term (none when the weight is 0)."""
    if not config.flow_smoothness:
        return LossTerms({})
    return LossTerms({"flow_smoothness": config.flow_smoothness * flow_smoothness_loss(residual)})
