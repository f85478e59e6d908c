"""Warp-and-refine generator: move the shots' own pixels onto the target landmarks, then paint.

A sibling of the paper's :class:`~talkinghead.models.generator.Generator` with the same identity
path (psi = P e-hat from the paper's embedder E drives every AdaIN of the decoder) but a different
source of appearance. Direct synthesis from a landmark image needs VoxCeleb-scale data; this
generator instead, for each of the K shots (FOMM, few-shot vid2vid, Bi-layer; see WARP.md):

1. motion: an analytic backward map target -> shot from the landmarks (a thin-plate spline,
   :mod:`.flow`), corrected by a small network that predicts a flow residual and a confidence
   logit at low resolution (``flow_size``);
2. few-shot blending: the shots' encoder features (and pixels) are warped with their maps and
   blended with per-pixel softmax weights over shots; the weights start from how close each
   shot's pose/expression is to the target's, so more shots cover more of the face;
3. refine: a decoder with the paper's AdaIN, driven by psi, turns the target's landmark features
   and the blended warped features into an image, and a mask mixes it with the blended warped
   pixels. It paints what no shot shows (mouth interior, disocclusions).

At initialisation the flow residual is zero and the mask is ~95% "warped pixels", so the
generator starts close to the classic landmark warp and learns only what the warp cannot do.
Only 2-D convolutions and 2-D ``grid_sample``: it exports to ONNX. Heads that start at zero
(flow residual, mask, confidence) are plain convolutions: spectral norm of a zero weight is
undefined.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config.model import WarpGeneratorConfig
from talkinghead.models import flow
from talkinghead.models.blocks import (
    AdainProjection,
    AdaptiveInstanceNorm,
    ResBlock,
    ResidualStack,
)
from talkinghead.models.spectral import sn_conv

IMAGE_CHANNELS = 3
# Motion net input: target landmark image, warped shot landmark image, warped shot pixels.
MOTION_INPUT_CHANNELS = 9
MASK_INIT_LOGIT = 3.0  # sigmoid(3) = 0.95 of the output from the warped pixels at the start


class Shots(NamedTuple):
    """The K shots of each item, encoded once (per person at inference, per episode in training).

    ``frames``/``landmark_images`` ``[N,K,3,S,S]`` in [-1,1]; ``points`` ``[N,K,68,2]`` pixels;
    ``features``: one ``[N*K,C,s,s]`` map per encoder scale (S/2, S/4, ...).
    """

    frames: Tensor
    landmark_images: Tensor
    points: Tensor
    features: tuple[Tensor, ...]


class WarpOutput(NamedTuple):
    image: Tensor  # [N,3,S,S] in [-1,1]
    warped: Tensor  # [N,3,S,S] the blended warped shots, before refinement
    mask: Tensor  # [N,1,S,S] in (0,1): share of the warped pixels in the output
    flow_residual: Tensor  # [N*K,2,f,f] the learned correction of the analytic flow (grid units)
    shot_weights: Tensor  # [N,K,f,f] per-pixel blending weights over shots (sum to 1)


def pose_distance(shot_points: Tensor, target_points: Tensor) -> Tensor:
    """Distance of normalised landmarks (position and scale removed): ``[N,K,68,2]``, ``[N,68,2]``
    -> ``[N,K]``. The same measure the nearest-shot baseline uses."""

    def normalise(points: Tensor) -> Tensor:
        centred = points - points.mean(dim=-2, keepdim=True)
        return centred / centred.flatten(-2).norm(dim=-1)[..., None, None].clamp_min(1e-6)

    return (normalise(shot_points) - normalise(target_points)[:, None]).flatten(-2).norm(dim=-1)


class MotionNet(nn.Module):
    """Per shot: (target landmarks, warped shot landmarks, warped shot) -> flow residual and
    confidence logit, at ``flow_size``. A one-level hourglass for context beyond 3x3 convs."""

    def __init__(self, channels: int, num_blocks: int, size: int) -> None:
        super().__init__()
        self.stem = sn_conv(MOTION_INPUT_CHANNELS, channels)
        self.down = ResBlock(channels, 2 * channels, resample="down", norm="instance")
        self.middle = ResidualStack(
            2 * channels, (2 * channels,) * num_blocks, input_size=size // 2, norm="instance"
        )
        self.up = ResBlock(2 * channels, channels, resample="up", norm="instance")
        self.head = nn.Conv2d(channels, 3, 3, padding=1)  # 2 flow + 1 confidence, start at 0
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.stem(x)
        h = self.up(self.middle(self.down(h))) + h
        out = self.head(F.relu(h))
        return out[:, :2], out[:, 2]


class WarpGenerator(AdainProjection, nn.Module):
    """G for the ``warp`` family. ``forward(target_landmark_image, target_points, psi, shots)``.

    Psi's layout is derived from the AdaIN layers as in the paper's generator (bottleneck, up
    blocks, output norm); P (``projection``) is one spectrally normalised linear layer.
    """

    uses_shots = True

    def __init__(self, config: WarpGeneratorConfig, *, image_size: int, embedding_dim: int):
        super().__init__()
        self.config, self.image_size, self.embedding_dim = config, image_size, embedding_dim
        feature_channels = config.feature_channels
        encoder = lambda: ResidualStack(  # noqa: E731
            IMAGE_CHANNELS,
            feature_channels,
            input_size=image_size,
            resample="down",
            norm="instance",
            first_preactivation=False,
        )
        self.shot_encoder, self.target_encoder = encoder(), encoder()
        self.motion = MotionNet(config.motion_channels, config.num_motion_blocks, config.flow_size)
        # How sharply the pose prior prefers the closest shot; learned, starts near a hard choice.
        self.log_pose_temperature = nn.Parameter(torch.tensor(float(config.pose_temperature)).log())
        deepest = 2 * feature_channels[-1]
        self.fuse = sn_conv(deepest, config.decoder_channels[0])
        self.bottleneck = ResidualStack(
            config.decoder_channels[0],
            (config.decoder_channels[0],) * config.num_bottleneck_blocks,
            input_size=image_size >> len(feature_channels),
            norm="adain",
        )
        self.ups = nn.ModuleList()
        self.skips = nn.ModuleList()
        in_channels = config.decoder_channels[0]
        skip_channels = [2 * c for c in reversed(feature_channels[:-1])] + [0]
        for out_channels, skip in zip(config.decoder_channels[1:], skip_channels):
            self.ups.append(ResBlock(in_channels, out_channels, resample="up", norm="adain"))
            self.skips.append(sn_conv(skip, out_channels, kernel_size=1) if skip else nn.Identity())
            in_channels = out_channels
        self.output_norm = AdaptiveInstanceNorm(in_channels)
        self.output_conv = nn.Conv2d(in_channels, IMAGE_CHANNELS + 1, 3, padding=1)
        with torch.no_grad():
            self.output_conv.bias[IMAGE_CHANNELS].fill_(MASK_INIT_LOGIT)
        self.build_projection(
            embedding_dim,
            (
                self.bottleneck.num_adain_params,
                *(up.num_adain_params for up in self.ups),
                self.output_norm.num_adain_params,
            ),
        )

    def encode_shots(self, frames: Tensor, landmark_images: Tensor, points: Tensor) -> Shots:
        """Encode ``[N,K,3,S,S]`` shots (with their landmark images and ``[N,K,68,2]`` points)."""
        features = self.shot_encoder.features(frames.flatten(0, 1))
        return Shots(frames, landmark_images, points, tuple(features))

    def forward(
        self, target_landmark_image: Tensor, target_points: Tensor, psi: Tensor, shots: Shots
    ) -> WarpOutput:
        """Render ``[N,3,S,S]`` frames of the shots' person with the target landmarks.

        ``target_landmark_image [N,3,S,S]`` in [-1,1], ``target_points [N,68,2]`` pixels,
        ``psi [N,psi_dim]``; ``shots`` from :meth:`encode_shots` with N items (or 1, shared), or
        with no ``features`` to encode them here (training: inside DDP's forward).
        """
        self.check_psi(psi)
        if not shots.features:
            shots = self.encode_shots(shots.frames, shots.landmark_images, shots.points)
        n = target_landmark_image.shape[0]
        shot_small = self._shot_small(shots, n)
        shots = _expand_shots(shots, n)
        k = shots.frames.shape[1]
        grid, residual, logits = self._motion(
            target_landmark_image, target_points, shots, shot_small
        )
        weights = torch.softmax(logits.view(n, k, *logits.shape[1:]), dim=1)  # [N,K,f,f]
        warped_rgb = blend_shots(flow.warp(shots.frames.flatten(0, 1), grid), weights, n, k)
        target_features = self.target_encoder.features(target_landmark_image)
        warped_features = [
            blend_shots(flow.warp(features, grid), weights, n, k) for features in shots.features
        ]
        x = self._decode(target_features, warped_features, psi)
        rgb, mask_logit = torch.tanh(x[:, :IMAGE_CHANNELS]), x[:, IMAGE_CHANNELS:]
        mask = torch.sigmoid(mask_logit)
        image = mask * warped_rgb + (1 - mask) * rgb
        return WarpOutput(image, warped_rgb, mask, residual, weights)

    def _shot_small(self, shots: Shots, n: int) -> Tensor:
        """What the motion net reads of each shot (landmark image and pixels at flow size),
        ``[N*K,6,f,f]``; shots shared by the batch are resized once, not once per item."""
        both = torch.cat([shots.landmark_images, shots.frames], 2).flatten(0, 1)
        small = F.interpolate(both, size=self.config.flow_size, mode="area")
        if shots.frames.shape[0] == n:
            return small
        return small.unsqueeze(0).expand(n, *small.shape).flatten(0, 1)

    def _motion(self, target_landmark_image, target_points, shots: Shots, shot_small: Tensor):
        """Refined sampling grids ``[N*K,f,f,2]``, the residual and confidence logits."""
        k = shots.frames.shape[1]
        size, flow_size = self.image_size, self.config.flow_size
        # Landmarks are data: the analytic map has no parameters. Kept in fp32 under autocast
        # (bf16 would put grid points ~0.25 px off at 128 px). The K shots share each target's
        # solve.
        with torch.no_grad(), torch.autocast(target_points.device.type, enabled=False):
            analytic = flow.tps_grid(target_points.float(), shots.points.float(), size, flow_size)
            analytic = analytic.flatten(0, 1)
        target_small = F.interpolate(target_landmark_image, size=flow_size, mode="area")
        target_small = target_small[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        warped_small = flow.warp(shot_small, analytic)
        residual, confidence = self.motion(torch.cat([target_small, warped_small], 1))
        grid = analytic + self.config.flow_residual_scale * residual.permute(0, 2, 3, 1)
        prior = -self.log_pose_temperature.exp() * pose_distance(shots.points, target_points)
        logits = confidence + prior.flatten()[:, None, None]
        return grid, residual, logits

    def _decode(self, target_features, warped_features, psi: Tensor) -> Tensor:
        params = psi.split(self.adain_sizes, dim=1)
        x = self.fuse(torch.cat([target_features[-1], warped_features[-1]], 1))
        x = self.bottleneck(x, params[0])
        scales = list(zip(reversed(target_features[:-1]), reversed(warped_features[:-1])))
        for index, (up, skip) in enumerate(zip(self.ups, self.skips)):
            x = up(x, params[1 + index])
            if index < len(scales):
                x = x + skip(torch.cat(scales[index], 1))
        x = F.relu(self.output_norm(x, params[-1]))
        return self.output_conv(x)


def _expand_shots(shots: Shots, n: int) -> Shots:
    """Shots of one person shared by a batch of N targets (inference), or N sets (training)."""
    if shots.frames.shape[0] == n:
        return shots
    if shots.frames.shape[0] != 1:
        raise ValueError(f"shots for {shots.frames.shape[0]} items, targets for {n}")
    k = shots.frames.shape[1]

    def repeat_flat(t: Tensor) -> Tensor:
        return t.unsqueeze(0).expand(n, *t.shape).flatten(0, 1) if t.shape[0] == k else t

    return Shots(
        shots.frames.expand(n, *shots.frames.shape[1:]),
        shots.landmark_images.expand(n, *shots.landmark_images.shape[1:]),
        shots.points.expand(n, *shots.points.shape[1:]),
        tuple(repeat_flat(f) for f in shots.features),
    )


def blend_shots(warped: Tensor, weights: Tensor, n: int, k: int) -> Tensor:
    """Per-pixel weighted sum over shots: ``[N*K,C,s,s]``, ``[N,K,f,f]`` -> ``[N,C,s,s]``."""
    size = warped.shape[-1]
    if weights.shape[-1] != size:
        weights = F.interpolate(weights, size=size, mode="bilinear", align_corners=False)
    return (warped.view(n, k, *warped.shape[1:]) * weights[:, :, None]).sum(dim=1)
