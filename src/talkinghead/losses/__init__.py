"""The paper's losses as functions over tensors: networks are passed in, weights come from config.

* :mod:`.adversarial`: hinge loss for D; ``-D(x_hat)`` and feature matching L_FM for G.
* :mod:`.content`: content loss L_CNT over pluggable feature networks, and its offline default.
* :mod:`.matching`: embedding match L_MCH.
* :mod:`.terms`: :class:`LossTerms`, the named weighted terms every loss returns for logging.
"""

from talkinghead.losses.adversarial import (
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    generator_adversarial_terms,
    hinge_loss_fake,
    hinge_loss_real,
)
from talkinghead.losses.content import (
    ContentLoss,
    FeatureTerm,
    IdentityFeatures,
    build_content_loss,
    descriptor_distance,
    feature_l1,
    ssim,
)
from talkinghead.losses.matching import embedding_match_loss, embedding_match_terms
from talkinghead.losses.motion import flow_smoothness_loss, flow_terms
from talkinghead.losses.terms import LossTerms

__all__ = [
    "ContentLoss",
    "FeatureTerm",
    "IdentityFeatures",
    "LossTerms",
    "build_content_loss",
    "descriptor_distance",
    "discriminator_loss",
    "embedding_match_loss",
    "embedding_match_terms",
    "feature_l1",
    "feature_matching_loss",
    "flow_smoothness_loss",
    "flow_terms",
    "generator_adversarial_loss",
    "generator_adversarial_terms",
    "hinge_loss_fake",
    "hinge_loss_real",
    "ssim",
]
