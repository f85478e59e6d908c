"""The InceptionV3 of FID (pytorch-fid's ``pt_inception-2015-12-05``), in plain PyTorch.

FID is only comparable across papers with this exact network: TensorFlow's 2015 Inception graph,
whose pooling differs from torchvision's InceptionV3 (average pools that exclude padding, a max
pool in the last block's pool branch). Its weights cannot be downloaded here; a user passes the
standard file ``pt_inception-2015-12-05-6726825d.pth`` (key names as pytorch-fid's
``FIDInceptionA``/``C``/``E`` modules), by path or in the weights folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.assets import find_weights
from talkinghead.errors import UserError
from talkinghead.pretrained.vgg import read_state_dict

FID_FILENAMES = ("pt_inception-2015-12-05-6726825d.pth", "pt_inception.pth")
FEATURE_DIM = 2048


class BasicConv(nn.Sequential):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU, keyed ``conv`` / ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    # TF's average pool ignores padded zeros (pytorch-fid: count_include_pad=False).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1)
        self.branch_pool = BasicConv(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = BasicConv(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv(in_channels, c, 1)
        self.branch7x7_2 = BasicConv(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv(in_channels, c, 1)
        self.branch7x7dbl_2 = BasicConv(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for i in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{i}")(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = x
        for i in range(1, 5):
            seven = getattr(self, f"branch7x7x3_{i}")(seven)
        three = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([three, seven, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """``max_pool``: the last block (Mixed_7c) pools with max, not average, in TF's graph."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(three),
                self.branch3x3_2b(three),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInception(nn.Module):
    """Images [N,3,H,W] in [-1,1] -> 2048-d pool features (resized to 299 px inside)."""

    def __init__(self, num_classes: int = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c = InceptionA(192, 32), InceptionA(256, 64)
        self.Mixed_5d, self.Mixed_6a = InceptionA(288, 64), InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, False), InceptionE(2048, True)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)  # in the file; unused for FID

    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def load_fid_inception(path: str | Path | None = None) -> FIDInception:
    """The FID network from the standard file (explicit path, else the weights folder)."""
    found = find_weights(path, FID_FILENAMES)
    if found is None:
        raise UserError(
            f"FID needs {FID_FILENAMES[0]} (pass its path or put it in the weights folder)"
        )
    state = read_state_dict(found)
    network = FIDInception()
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(
        k for k in set(state) - set(expected) if not k.endswith("num_batches_tracked")
    )
    if missing or unexpected:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{found}: not the FID Inception weights ({problem})")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise UserError(
                f"{found}: {key} has shape {list(state[key].shape)}, {list(value.shape)} expected"
            )
    network.load_state_dict({k: state[k] for k in expected}, strict=False)
    return network.eval().requires_grad_(False)
