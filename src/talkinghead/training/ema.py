"""Exponential moving average of E and G weights, used for evaluation and export (lab code)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` in eval mode."""
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * module`` for parameters; buffers are copied.

    Buffers include spectral norm's power-iteration vectors, which track the live weights.
    """
    for ema_param, param in zip(ema.parameters(), module.parameters()):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), module.buffers()):
        ema_buffer.copy_(buffer)
