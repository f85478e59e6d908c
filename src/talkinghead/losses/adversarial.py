"""Adversarial losses (paper Sec. 3.2): hinge loss for D, -D(x_hat) and feature matching for G.

Scores are the discriminator's realism scores ``D(x, y, i)`` of shape ``[N]`` (any shape works:
everything is a mean). Features are D's per-block activations, one tensor per residual block,
as returned next to the score by the discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from talkinghead.config.loss import LossConfig
from talkinghead.losses.terms import LossTerms


def hinge_loss_real(real_score: Tensor) -> Tensor:
    """``mean(max(0, 1 - D(x)))``: real frames are pushed to scores >= 1."""
    return F.relu(1.0 - real_score).mean()


def hinge_loss_fake(fake_score: Tensor) -> Tensor:
    """``mean(max(0, 1 + D(x_hat)))``: generated frames are pushed to scores <= -1."""
    return F.relu(1.0 + fake_score).mean()


def discriminator_loss(real_score: Tensor, fake_score: Tensor) -> LossTerms:
    """The discriminator's hinge loss, split into its real and fake halves for logging.

    The caller computes ``fake_score`` on a detached ``x_hat`` so that this step only updates D.
    """
    return LossTerms(
        {"hinge_real": hinge_loss_real(real_score), "hinge_fake": hinge_loss_fake(fake_score)}
    )


def generator_adversarial_loss(fake_score: Tensor) -> Tensor:
    """``-mean(D(x_hat))``, the realism term of L_ADV."""
    return -fake_score.mean()


def feature_matching_loss(
    real_features: Sequence[Tensor], fake_features: Sequence[Tensor]
) -> Tensor:
    """L_FM: mean L1 between D's block features on real and generated frames, averaged over blocks.

    Real features are detached: L_FM trains G only (D is trained by the hinge loss alone). The
    average over blocks (not the sum) keeps the weight of 10 independent of D's depth, as the
    lab's public code does.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(
            f"feature matching needs the same non-zero number of blocks, "
            f"got {len(real_features)} real and {len(fake_features)} generated"
        )
    per_block = [F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features)]
    return sum(per_block) / len(per_block)


def generator_adversarial_terms(
    config: LossConfig,
    fake_score: Tensor,
    real_features: Sequence[Tensor],
    fake_features: Sequence[Tensor],
) -> LossTerms:
    """Weighted L_ADV for the generator step: ``adversarial`` and ``feature_matching`` terms."""
    terms = {"adversarial": config.adversarial * generator_adversarial_loss(fake_score)}
    if config.feature_matching:
        fm = feature_matching_loss(real_features, fake_features)
        terms["feature_matching"] = config.feature_matching * fm
    return LossTerms(terms)
