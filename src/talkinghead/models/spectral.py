"""Spectrally normalised layers: every conv and linear layer of E, G and D (paper, Sec. 3.2).

One implementation throughout: ``torch.nn.utils.parametrizations.spectral_norm``. Its state
dict keys (``<layer>.parametrizations.weight.original`` plus the power-iteration vectors
``...weight.0._u`` / ``_v``) round-trip through ``state_dict``/``load_state_dict`` and through
:mod:`talkinghead.checkpoint`. In ``eval()`` it runs no power iteration, so evaluation is
deterministic; in ``train()`` each forward refines ``u``/``v`` once, as in Miyato et al.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn_conv(
    in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
) -> nn.Conv2d:
    """A spectrally normalised conv with 'same' padding (odd ``kernel_size``)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return spectral_norm(conv)


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A spectrally normalised linear layer."""
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))
