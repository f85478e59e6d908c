"""SAGAN self-attention (Zhang et al. 2019), used by E, G and D at configured resolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.models.spectral import sn_conv


class SelfAttention(nn.Module):
    """Non-local attention over all pixels, added to the input through a learned gate.

    ``forward(x [N,C,H,W]) -> [N,C,H,W]``. Queries and keys have C/8 channels and values C/2
    (BigGAN's widths); every 1x1 conv is spectrally normalised like the rest of the networks.
    The gate ``gamma`` starts at 0, so a fresh block is the identity and attention is learned
    in gradually (SAGAN).
    """

    num_adain_params = 0  # lets attention sit in a stack of AdaIN blocks (see ResidualStack)

    def __init__(self, channels: int) -> None:
        super().__init__()
        key_channels = max(channels // 8, 1)
        value_channels = max(channels // 2, 1)
        self.query = sn_conv(channels, key_channels, kernel_size=1, bias=False)
        self.key = sn_conv(channels, key_channels, kernel_size=1, bias=False)
        self.value = sn_conv(channels, value_channels, kernel_size=1, bias=False)
        self.out = sn_conv(value_channels, channels, kernel_size=1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, adain_params: Tensor | None = None) -> Tensor:
        """``adain_params`` is ignored; accepted so every layer of a stack has one signature."""
        n, _, h, w = x.shape
        query = self.query(x).flatten(2)  # [N,C/8,HW]
        key = self.key(x).flatten(2)  # [N,C/8,HW]
        value = self.value(x).flatten(2)  # [N,C/2,HW]
        return x + self.gamma * self.out(_attend(query, key, value).reshape(n, -1, h, w))


def _attend(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """softmax(q^T k) applied to v over the L pixels: ``[N,Ck,L]`` x2, ``[N,Cv,L]`` -> ``[N,Cv,L]``.

    SAGAN uses unscaled dot products (scale 1). On CPU, SDPA takes its unfused "math" path when
    values are wider than keys; explicit bmm + softmax computes the same ~1.8x faster. Elsewhere
    the fused SDPA kernels avoid holding the L x L matrix.
    """
    if query.device.type == "cpu":
        weights = torch.bmm(query.transpose(1, 2), key).softmax(dim=-1)  # [N,L,L]
        return torch.bmm(value, weights.transpose(1, 2))
    attended = F.scaled_dot_product_attention(
        query.transpose(1, 2)[:, None],
        key.transpose(1, 2)[:, None],
        value.transpose(1, 2)[:, None],
        scale=1.0,
    )
    return attended[:, 0].transpose(1, 2)
