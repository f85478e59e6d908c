"""Building blocks shared by E, G and D: AdaIN, the BigGAN residual block, and block stacks.

Conventions: feature maps are ``[N,C,H,W]``; every conv is spectrally normalised
(:mod:`.spectral`). A layer that takes AdaIN parameters declares how many it needs in
``num_adain_params`` (0 if none), so whoever owns the layers derives the width of psi by
summing, and hands the parameters out with ``params.split(sizes, dim=1)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.models.attention import SelfAttention
from talkinghead.models.spectral import sn_conv, sn_linear

NormKind = Literal["none", "instance", "adain"]
Resample = Literal["none", "down", "up"]


class AdaptiveInstanceNorm(nn.Module):
    """AdaIN (Huang & Belongie 2017): per-channel instance norm, then scale and shift from psi.

    ``forward(x [N,C,H,W], params [N,2C]) -> [N,C,H,W]``; ``params`` holds C scales then C
    shifts. The normalisation is group norm with a group per channel: instance norm on PyTorch's
    CPU kernel for group norm (~5x faster than ``F.instance_norm``, which reshapes into a batch
    norm), fused, with the epsilon inside the reciprocal square root: a constant channel gives 0
    and finite gradients, where a hand-written ``sqrt(var)`` gives NaN (a known pitfall of one
    reimplementation). The group count is the layer's channel count, a constant an ONNX export
    records as such.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.num_adain_params = 2 * channels

    def neutral_params(self) -> Tensor:
        """Parameters that make this a plain instance norm: scale 1, shift 0. ``[2C]``."""
        return torch.cat([torch.ones(self.channels), torch.zeros(self.channels)])

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        if params.shape[0] == 1 or params.stride(0) == 0:
            # One person's psi for the whole batch (rendering): the scale and shift are group
            # norm's own per-channel affine, applied in its one pass over x.
            # Slices with constant bounds (not chunk): an ONNX export of a baked psi then has the
            # scale and shift as constants.
            c = self.channels
            return F.group_norm(x, c, params[0, :c], params[0, c:], self.eps)
        scale, shift = params[:, :, None, None].chunk(2, dim=1)
        return F.group_norm(x, self.channels, eps=self.eps) * scale + shift


def upsample_2x(x: Tensor) -> Tensor:
    """Nearest-neighbour upsampling by 2, ``[N,C,H,W] -> [N,C,2H,2W]``.

    For NCHW tensors, a broadcast and reshape is ~5x faster on CPU than ``F.interpolate``
    (whose nearest kernel is fast only for channels-last tensors, so those keep it).
    """
    if x.is_contiguous(memory_format=torch.channels_last):
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class AdainProjection:
    """What both generator families share about psi (mix into an ``nn.Module``).

    ``build_projection(embedding_dim, adain_sizes)`` records the AdaIN consumers' sizes, makes P
    (one spectrally normalised linear layer, as in the lab's code) and starts P's bias at the
    neutral psi (every scale 1, every shift 0), so an untrained P gives plain instance norms
    instead of scales near 0 that would erase the signal.
    """

    def build_projection(self, embedding_dim: int, adain_sizes: tuple[int, ...]) -> None:
        self.adain_sizes = adain_sizes
        self.psi_dim = sum(adain_sizes)
        self.projection = sn_linear(embedding_dim, self.psi_dim)  # P
        with torch.no_grad():
            self.projection.bias.copy_(self.neutral_psi())

    def neutral_psi(self) -> Tensor:
        """psi that turns every AdaIN into a plain instance norm. ``[psi_dim]``.

        Modules are registered in the order ``forward`` consumes psi, so walking them in
        registration order gives the layout (a test checks this against forward).
        """
        norms = [m for m in self.modules() if isinstance(m, AdaptiveInstanceNorm)]
        return torch.cat([norm.neutral_params() for norm in norms]).to(self.projection.bias)

    def project(self, embedding: Tensor) -> Tensor:
        """psi = P e-hat: ``[N,embedding_dim]`` -> ``[N,psi_dim]``."""
        return self.projection(embedding)

    def check_psi(self, psi: Tensor) -> None:
        if psi.dim() != 2 or psi.shape[1] != self.psi_dim:
            raise ValueError(f"expected psi [N,{self.psi_dim}], got {tuple(psi.shape)}")


def make_norm(kind: NormKind, channels: int) -> nn.Module:
    """The block's normalisation layer: none, instance norm (learned affine) or AdaIN."""
    if kind == "none":
        return nn.Identity()
    if kind == "instance":
        # GroupNorm with a group per channel is instance norm with a learned per-channel
        # affine (same parameter names as InstanceNorm2d), on the faster kernel.
        return nn.GroupNorm(channels, channels)
    if kind == "adain":
        return AdaptiveInstanceNorm(channels)
    raise ValueError(f"unknown norm {kind!r}")


def _adain_size(norm: nn.Module | None) -> int:
    return norm.num_adain_params if isinstance(norm, AdaptiveInstanceNorm) else 0


class ResBlock(nn.Module):
    """BigGAN residual block.

    Main path: norm -> ReLU -> [up x2] -> conv3x3 -> norm -> ReLU -> conv3x3 -> [avgpool 2].
    Skip path: [up] -> conv1x1 -> [avgpool], present when channels or size change.

    ``forward(x [N,C_in,H,W], adain_params [N,num_adain_params] | None) -> [N,C_out,H',W']``
    with H' = 2H (``up``), H/2 (``down``) or H. With ``preactivation=False`` (the first block
    on an image, BigGAN's "optimised" block) the first norm and ReLU are dropped, so the ReLU
    does not clip away the negative half of a [-1,1] image.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        resample: Resample = "none",
        norm: NormKind = "none",
        preactivation: bool = True,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm1 = make_norm(norm, in_channels) if preactivation else None
        self.conv1 = sn_conv(in_channels, out_channels)
        self.norm2 = make_norm(norm, out_channels)
        self.conv2 = sn_conv(out_channels, out_channels)
        needs_skip = in_channels != out_channels or resample != "none"
        self.skip = sn_conv(in_channels, out_channels, kernel_size=1) if needs_skip else None
        self.adain_sizes = (_adain_size(self.norm1), _adain_size(self.norm2))
        self.num_adain_params = sum(self.adain_sizes)
        self.pooled_conv2: nn.Conv2d | None = None  # conv2 and the pool as one (fix_pooling)

    def forward(self, x: Tensor, adain_params: Tensor | None = None) -> Tensor:
        params1 = params2 = None
        if self.num_adain_params:
            if adain_params is None:
                raise ValueError("this block uses AdaIN and needs adain_params")
            params1, params2 = adain_params.split(self.adain_sizes, dim=1)
        h = x
        if self.norm1 is not None:
            h = F.relu(_normalize(self.norm1, h, params1))
        if self.resample == "up":
            h = upsample_2x(h)
        h = F.relu(_normalize(self.norm2, self.conv1(h), params2))
        if self.resample != "down":
            h = self.conv2(h)
        elif self.training or torch.is_grad_enabled():
            h = F.avg_pool2d(self.conv2(h), 2)
        elif self.pooled_conv2 is not None:
            h = self.pooled_conv2(h)
        else:
            h = F.conv2d(h, pooled_kernel(self.conv2.weight), self.conv2.bias, stride=2, padding=1)
        return h + self._shortcut(x)

    @torch.no_grad()
    def fix_pooling(self) -> None:
        """Store conv2 and the pool of a ``down`` block as one fixed 4x4 stride-2 conv, for an
        export of finished weights (an exporter needs kernels of known shape)."""
        if self.resample == "down":
            weight = pooled_kernel(self.conv2.weight)
            self.pooled_conv2 = nn.Conv2d(*weight.shape[1::-1], 4, stride=2, padding=1)
            self.pooled_conv2.weight.copy_(weight)
            self.pooled_conv2.bias.copy_(self.conv2.bias)

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.skip is None:
            return x
        # A 1x1 conv commutes with nearest upsampling and with average pooling, so it runs at
        # the lower of the two resolutions: the same function as [up] -> conv -> [pool], with
        # 4x fewer FLOPs.
        if self.resample == "down":
            return self.skip(F.avg_pool2d(x, 2))
        if self.resample == "up":
            return upsample_2x(self.skip(x))
        return self.skip(x)


def pooled_kernel(weight: Tensor) -> Tensor:
    """The 4x4 stride-2 kernel of a 3x3 'same' conv followed by a 2x2 average pool.

    Each pooled output averages four 3x3 windows that together cover a 4x4 one, so the kernel
    is the 3x3 one convolved with a 2x2 box of 1/4 (the zero padding of 1 carries over): the
    same function with 2.25x fewer multiply-adds and no full-resolution intermediate (1.8-2.2x
    faster on CPU). ``down`` blocks use it where no gradient is needed (inference).
    """
    shifted = (F.pad(weight, (left, 1 - left, top, 1 - top)) for left in (0, 1) for top in (0, 1))
    return 0.25 * sum(shifted)


def _normalize(norm: nn.Module, x: Tensor, params: Tensor | None) -> Tensor:
    return norm(x, params) if isinstance(norm, AdaptiveInstanceNorm) else norm(x)


class ResidualStack(nn.Module):
    """Residual blocks built from a channel schedule, self-attention after chosen resolutions.

    One block per entry of ``channels``; every block resamples the same way. A SAGAN layer
    follows each block whose output size is in ``attention_resolutions``.
    ``forward(x [N,in_channels,S,S], adain_params [N,num_adain_params] | None)`` returns
    ``[N,out_channels,output_size,output_size]``; :meth:`features` returns every layer's output.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        *,
        input_size: int,
        resample: Resample = "none",
        norm: NormKind = "none",
        attention_resolutions: tuple[int, ...] = (),
        first_preactivation: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = input_size
        for index, out_channels in enumerate(channels):
            preactivation = first_preactivation or index > 0
            block = ResBlock(
                in_channels, out_channels, resample=resample, norm=norm, preactivation=preactivation
            )
            layers.append(block)
            size = {"down": size // 2, "up": size * 2, "none": size}[resample]
            if size in attention_resolutions:
                layers.append(SelfAttention(out_channels))
            in_channels = out_channels
        self.layers = nn.ModuleList(layers)
        self.out_channels = in_channels
        self.output_size = size
        self.adain_sizes = tuple(layer.num_adain_params for layer in layers)
        self.num_adain_params = sum(self.adain_sizes)

    def _params(self, adain_params: Tensor | None) -> tuple[Tensor | None, ...]:
        if not self.num_adain_params:
            return (None,) * len(self.layers)
        if adain_params is None or adain_params.shape[1] != self.num_adain_params:
            got = None if adain_params is None else tuple(adain_params.shape)
            raise ValueError(f"expected adain_params [N,{self.num_adain_params}], got {got}")
        return adain_params.split(self.adain_sizes, dim=1)

    def forward(self, x: Tensor, adain_params: Tensor | None = None) -> Tensor:
        for layer, params in zip(self.layers, self._params(adain_params)):
            x = layer(x, params)
        return x

    def features(self, x: Tensor, adain_params: Tensor | None = None) -> list[Tensor]:
        """Output of every layer (blocks and attention) in order; the last is ``forward``'s."""
        outputs = []
        for layer, params in zip(self.layers, self._params(adain_params)):
            x = layer(x, params)
            outputs.append(x)
        return outputs


def frame_landmark_path(
    channels: tuple[int, ...], image_size: int, attention_resolutions: tuple[int, ...]
) -> ResidualStack:
    """The downsampling path shared by E and D's V: frame + landmark image (6 channels) in,
    no normalisation, self-attention where configured (paper, Sec. 3.2)."""
    return ResidualStack(
        6,
        channels,
        input_size=image_size,
        resample="down",
        norm="none",
        attention_resolutions=attention_resolutions,
        first_preactivation=False,
    )
