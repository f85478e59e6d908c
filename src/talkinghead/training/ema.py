"""Exponential moving average of E and G weights, used for evaluation and export (lab code).

The decay ramps up with the number of updates (EDM / StyleGAN's EMA warm-up): a fixed 0.999
from step 0 keeps exp(-steps/1000) of the random initialisation in the average, 12% after the
2,143 steps of a CPU run. With ``decay_at(t) = min(decay, (1 + t) / (10 + t))`` the average of a
short run is made of its recent weights, and long runs reach the configured decay.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` in eval mode."""
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


def decay_at(decay: float, num_updates: int) -> float:
    """The EMA decay for the ``num_updates``-th update (1-based): warm-up, then ``decay``."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * module`` for parameters; buffers are copied.

    Buffers include spectral norm's power-iteration vectors, which track the live weights.
    """
    for ema_param, param in zip(ema.parameters(), module.parameters()):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), module.buffers()):
        ema_buffer.copy_(buffer)
