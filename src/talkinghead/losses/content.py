"""Content loss L_CNT (paper Sec. 3.2) over pluggable feature networks, plus its offline stand-in.

The paper compares real and generated frames through VGG19 and VGG-Face activations. Here a
content loss is a list of :class:`FeatureTerm`: any callable mapping images ``[N,3,H,W]`` in
[-1,1] to a list of activations (or to an object with ``.features``, and optionally
``.descriptor``, like the face-identity network's output). Networks are built and loaded by the
caller (or by :func:`build_content_loss`) and passed in; the loss only compares activations.

When no VGG weights are available (the usual case offline, see README), the default becomes
the dlib face-identity network's features and descriptor plus pixel L1 and SSIM terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.assets import weights_dir
from talkinghead.config.loss import LossConfig
from talkinghead.errors import UserError
from talkinghead.losses.terms import LossTerms
from talkinghead.pretrained.vgg import (
    VGG19_FILENAMES,
    VGGFACE_FILENAMES,
    find_vgg19,
    find_vggface,
    load_vgg19,
    load_vggface,
)

ChipFn = Callable[[Tensor, Tensor], Tensor]


class FeatureTerm(NamedTuple):
    """One feature network of a content loss and the weights of what it contributes.

    network: images ``[N,3,H,W]`` in [-1,1] -> list of activations, or an object with
        ``.features`` (and ``.descriptor`` ``[N,D]`` when ``descriptor_weight`` is set).
    weight: on the sum over layers of the mean L1 between real and generated activations.
    name: the logged term's name; the descriptor term is logged as ``<name>_descriptor``.
    descriptor_weight: on ``1 - cosine`` between real and generated descriptors.
    uses_landmarks: call ``network(images, landmarks)`` with the landmarks given to the loss.
    """

    network: Callable[..., Any]
    weight: float
    name: str = "features"
    descriptor_weight: float = 0.0
    uses_landmarks: bool = False


def _features_of(output: Any) -> list[Tensor]:
    if hasattr(output, "features"):
        return list(output.features)
    if isinstance(output, Tensor):
        return [output]
    return list(output)


def feature_l1(real_features: Sequence[Tensor], fake_features: Sequence[Tensor]) -> Tensor:
    """Sum over layers of the mean absolute difference (the lab code's per-layer ``l1_loss``)."""
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(
            f"got {len(real_features)} real and {len(fake_features)} generated activations"
        )
    return sum(F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features))


def descriptor_distance(real_descriptor: Tensor, fake_descriptor: Tensor) -> Tensor:
    """Mean of ``1 - cosine similarity`` between identity descriptors ``[N,D]``."""
    return (1.0 - F.cosine_similarity(fake_descriptor, real_descriptor.detach(), dim=-1)).mean()


def ssim(images_a: Tensor, images_b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of ``[N,C,H,W]`` images in [-1,1] (Gaussian window, valid area).

    Constants as in Wang et al. 2004 for a data range of 1; the window shrinks (odd) for images
    smaller than it.
    """
    a, b = (images_a + 1) / 2, (images_b + 1) / 2
    size = min(window_size, *a.shape[-2:])
    size -= 1 - size % 2
    coords = torch.arange(size, dtype=a.dtype, device=a.device) - (size - 1) / 2
    gauss = torch.exp(-(coords**2) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    # One separable blur over the five statistics at once (grouped per channel).
    stats = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    groups = stats.shape[1]
    stats = F.conv2d(stats, gauss.view(1, 1, 1, size).expand(groups, 1, 1, size), groups=groups)
    stats = F.conv2d(stats, gauss.view(1, 1, size, 1).expand(groups, 1, size, 1), groups=groups)
    mu_a, mu_b, aa, bb, ab = stats.chunk(5, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean()


class IdentityFeatures(nn.Module):
    """Runs a face-identity network on face chips cut from [-1,1] images.

    identity_net: chips ``[N,3,chip_size,chip_size]`` in [-1,1] -> object with ``.features``
        and ``.descriptor`` (it normalises its input itself).
    chip_fn: ``chip_fn(images, landmarks) -> chips``, the differentiable landmark-aligned chip
        extractor; landmarks change every batch, so they are passed per call, not bound. With a
        chip_fn, landmarks are required. Without one, the chip is the central square of side
        ``crop * min(H, W)`` resized to ``chip_size``: a fixed stand-in for alignment that fits
        the preprocessed, face-centred crops.
    """

    def __init__(
        self,
        identity_net: Callable[[Tensor], Any],
        chip_fn: ChipFn | None = None,
        crop: float = 0.6,
        chip_size: int = 150,
    ) -> None:
        super().__init__()
        self.identity_net = identity_net
        self.chip_fn = chip_fn
        self.crop = crop
        self.chip_size = chip_size

    def chips(self, images: Tensor, landmarks: Tensor | None = None) -> Tensor:
        if self.chip_fn is not None:
            if landmarks is None:
                raise ValueError(
                    "this identity loss aligns face chips: pass landmarks to the content loss"
                )
            return self.chip_fn(images, landmarks)
        height, width = images.shape[-2:]
        side = max(1, round(self.crop * min(height, width)))
        top, left = (height - side) // 2, (width - side) // 2
        crop = images[..., top : top + side, left : left + side]
        size = (self.chip_size, self.chip_size)
        return F.interpolate(
            crop, size=size, mode="bilinear", align_corners=False, antialias=side > self.chip_size
        )

    def forward(self, images: Tensor, landmarks: Tensor | None = None) -> Any:
        return self.identity_net(self.chips(images, landmarks))


class ContentLoss(nn.Module):
    """Weighted L1 between feature activations of real and generated images, plus pixel terms.

    forward(generated, real, landmarks=None) -> LossTerms, with ``generated`` and ``real``
    ``[N,3,H,W]`` in [-1,1]. Real activations are computed without gradient, so gradients reach
    the generated image only. Networks given as ``nn.Module`` are registered (``.to()`` moves
    them), frozen and kept in eval mode. Terms with weight 0 are not computed.
    """

    def __init__(
        self,
        feature_terms: Sequence[FeatureTerm | tuple] = (),
        *,
        pixel_l1: float = 0.0,
        ssim: float = 0.0,
    ) -> None:
        super().__init__()
        self.feature_terms = [FeatureTerm(*term) for term in feature_terms]
        modules = [t.network for t in self.feature_terms if isinstance(t.network, nn.Module)]
        self.networks = nn.ModuleList(modules)
        self.networks.requires_grad_(False)
        self.pixel_l1_weight = pixel_l1
        self.ssim_weight = ssim
        self.train(False)

    def train(self, mode: bool = True) -> ContentLoss:
        super().train(mode)
        self.networks.eval()  # pretrained statistics stay fixed whatever the caller's mode
        return self

    def forward(
        self, generated: Tensor, real: Tensor, landmarks: Tensor | None = None
    ) -> LossTerms:
        real = real.detach()
        terms: dict[str, Tensor] = {}
        for term in self.feature_terms:
            extra = (landmarks,) if term.uses_landmarks else ()
            with torch.no_grad():
                real_out = term.network(real, *extra)
            fake_out = term.network(generated, *extra)
            if term.weight:
                terms[term.name] = term.weight * feature_l1(
                    _features_of(real_out), _features_of(fake_out)
                )
            if term.descriptor_weight:
                distance = descriptor_distance(real_out.descriptor, fake_out.descriptor)
                terms[f"{term.name}_descriptor"] = term.descriptor_weight * distance
        if self.pixel_l1_weight:
            terms["pixel_l1"] = self.pixel_l1_weight * F.l1_loss(generated, real)
        if self.ssim_weight:
            terms["ssim"] = self.ssim_weight * (1.0 - ssim(generated, real))
        return LossTerms(terms)


def _vgg_content_loss(
    config: LossConfig, vgg19_file: Path | None, vggface_file: Path | None
) -> tuple[ContentLoss, str]:
    terms, parts, absent = [], [], []
    for name, file, weight, load, filenames in (
        ("vgg19", vgg19_file, config.vgg19, load_vgg19, VGG19_FILENAMES),
        ("vggface", vggface_file, config.vggface, load_vggface, VGGFACE_FILENAMES),
    ):
        label = "VGG19" if name == "vgg19" else "VGG-Face"
        if file is not None:
            terms.append(FeatureTerm(load(file, input_size=config.vgg_input_size), weight, name))
            parts.append(f"{label} x{weight:g} from {file}")
        elif weight:
            looked = f"{' / '.join(filenames)} in {weights_dir()}"
            absent.append(f"{label} weights not found ({looked}), term left out")
    description = "content loss: the paper's VGG terms (" + ", ".join(parts) + ")"
    return ContentLoss(terms), "; ".join([description, *absent])


def _identity_content_loss(
    config: LossConfig,
    identity_net: Callable[[Tensor], Any] | None,
    chip_fn: ChipFn | None,
    reason: str,
) -> tuple[ContentLoss, str]:
    terms, parts = [], []
    if identity_net is not None and (config.identity_features or config.identity_descriptor):
        network = IdentityFeatures(identity_net, chip_fn, crop=config.identity_crop)
        terms.append(
            FeatureTerm(
                network,
                config.identity_features,
                name="identity",
                descriptor_weight=config.identity_descriptor,
                uses_landmarks=True,
            )
        )
        where = "landmark-aligned chips" if chip_fn else f"central {config.identity_crop:g} crops"
        parts.append(
            f"identity-net features x{config.identity_features:g} + descriptor 1-cos "
            f"x{config.identity_descriptor:g} on {where}"
        )
    if config.pixel_l1:
        parts.append(f"pixel L1 x{config.pixel_l1:g}")
    if config.ssim:
        parts.append(f"1-SSIM x{config.ssim:g}")
    kind = "identity + pixel"
    if not terms:
        kind = "pixel-only"
        reason += "; no identity network given" if identity_net is None else ""
    loss = ContentLoss(terms, pixel_l1=config.pixel_l1, ssim=config.ssim)
    chosen = ", ".join(parts) or "no terms"
    return loss, f"content loss: {kind} stand-in ({chosen}) because {reason}"


def build_content_loss(
    config: LossConfig,
    vgg19_path: str | Path | None = None,
    vggface_path: str | Path | None = None,
    identity_net: Callable[[Tensor], Any] | None = None,
    chip_fn: ChipFn | None = None,
) -> tuple[ContentLoss, str]:
    """Choose and build the content loss; also return one line saying what was chosen and why.

    ``config.content_backbone``: "vgg" uses the VGG files found (explicit paths, else the
    weights folder) and fails if there are none; "identity" uses ``identity_net`` (optionally
    with ``chip_fn``, see :class:`IdentityFeatures`) plus pixel L1 and SSIM; "auto" is "vgg" when
    any VGG file is found, else "identity". The caller prints the description (never silent).
    """
    backbone = config.content_backbone
    if backbone == "identity":
        return _identity_content_loss(
            config, identity_net, chip_fn, "content_backbone is 'identity'"
        )
    vgg19_file = find_vgg19(vgg19_path) if config.vgg19 else None
    vggface_file = find_vggface(vggface_path) if config.vggface else None
    if vgg19_file is not None or vggface_file is not None:
        return _vgg_content_loss(config, vgg19_file, vggface_file)
    hint = f"pass paths or put {VGG19_FILENAMES[0]} / {VGGFACE_FILENAMES[0]} in {weights_dir()}"
    if backbone == "vgg":
        raise UserError(
            f"content_backbone is 'vgg' but no VGG19 or VGG-Face weights were found: {hint}"
        )
    return _identity_content_loss(
        config, identity_net, chip_fn, f"no VGG19/VGG-Face weights were found ({hint})"
    )
