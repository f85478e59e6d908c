"""LPIPS (Zhang et al. 2018), VGG variant, from the two standard files a user provides:
torchvision's VGG16 state dict (``vgg16-397923af.pth``) and the LPIPS linear layers
(``vgg.pth`` of the ``lpips`` package: keys ``lin0.model.1.weight`` ... ``lin4``).

distance = sum over relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the spatial mean of
w_l . (unit-normalised features of x - those of y)^2, on inputs scaled as LPIPS does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from talkinghead.assets import find_weights
from talkinghead.errors import UserError
from talkinghead.pretrained.vgg import (
    VGG16_BLOCKS,
    VGGFeatures,
    _conv_layout,
    _head_layout,
    _load_into,
    check_state_dict,
    read_state_dict,
)

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
VGG16_FILENAMES = ("vgg16-397923af.pth", "vgg16.pth")
LINEAR_FILENAMES = ("lpips_vgg.pth", "vgg.pth")
# LPIPS's ScalingLayer: (x - shift) / scale on [-1,1] inputs; VGGFeatures computes
# ((x + 1) * pixel_scale / 2 - mean) / std, so pixel_scale = 2 and mean = 1 + shift.
_SHIFT, _SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """forward(x, y): images [N,3,H,W] in [-1,1] -> distances [N] (0 for identical images)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = VGGFeatures(
            VGG16_BLOCKS,
            LPIPS_LAYERS,
            mean=tuple(1 + s for s in _SHIFT),
            std=_SCALE,
            pixel_scale=2.0,
        )
        self.linear = nn.ParameterList(
            [nn.Parameter(torch.ones(1, c, 1, 1) / c) for c in LPIPS_CHANNELS]
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, weight in zip(self.trunk(x), self.trunk(y), self.linear):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            total = total + ((fx - fy) ** 2 * weight).sum(dim=1).mean(dim=(1, 2))
        return total


def load_lpips(vgg16: str | Path | None = None, linear: str | Path | None = None) -> LPIPS:
    """LPIPS from the two files (explicit paths, else the weights folder); strict."""
    trunk_file = find_weights(vgg16, VGG16_FILENAMES)
    linear_file = find_weights(linear, LINEAR_FILENAMES)
    if trunk_file is None or linear_file is None:
        raise UserError(f"LPIPS needs {VGG16_FILENAMES[0]} and the LPIPS {LINEAR_FILENAMES[1]}")
    model = LPIPS()
    state = read_state_dict(trunk_file)
    required, to_module = _conv_layout(VGG16_BLOCKS, "features.{index}")
    sizes = ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096))
    optional = _head_layout(("classifier.0", "classifier.3", "classifier.6"), sizes)
    check_state_dict(trunk_file, state, required, optional, "a torchvision VGG16 state dict")
    _load_into(model.trunk, state, to_module)
    linear_state = read_state_dict(linear_file)
    shapes = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)}
    check_state_dict(linear_file, linear_state, shapes, {}, "the LPIPS linear layers (vgg)")
    with torch.no_grad():
        for i, weight in enumerate(model.linear):
            weight.copy_(linear_state[f"lin{i}.model.1.weight"])
    return model.eval().requires_grad_(False)
