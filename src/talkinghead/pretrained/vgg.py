"""VGG19 (ImageNet) and VGG-Face feature networks in plain PyTorch, for the paper's content loss.

No weights ship with this project and none are downloaded. A user provides the standard files:

* VGG19: torchvision's ``vgg19`` state dict (``vgg19-dcbb9e9d.pth``), keys ``features.N.weight``
  / ``features.N.bias`` for the 16 convolutions and ``classifier.{0,3,6}.*`` for the head.
  Input: RGB in [0,1] normalised with ImageNet mean/std.
* VGG-Face: the widely used PyTorch conversion of the Oxford VGG-Face model (``vgg_face_dag.pth``),
  keys ``conv{block}_{i}.weight/bias`` for the 13 convolutions of its VGG16 trunk and
  ``fc6``/``fc7``/``fc8`` for the head (2622 identities). Input: RGB in [0,255] minus the mean
  (129.186, 104.762, 93.594), std 1.

Files are found by explicit path or by name in the weights folder (``talkinghead.assets``).
Loading is strict: a missing or unexpected key, or a wrong shape, is a one-line ``UserError``
naming the file. The classifier heads are optional (they are not used; their shapes are checked
when present) so a trunk-only export also loads.

The networks return the activations the paper names "conv1,6,11,20,29" (VGG19) and
"conv1,6,11,18,25" (VGG-Face): those are indices into torchvision's ``features`` sequence, and at
each of them sits the ReLU after the first convolution of a block, i.e. relu1_1, relu2_1,
relu3_1, relu4_1 and relu5_1 of both networks. Layers past the deepest requested one are not
built. Inputs are images ``[N,3,H,W]`` in [-1,1]; each network normalises them itself and runs
at the image's own size unless ``input_size`` asks for a resize (the convolutional trunk does not
need 224 px; only the unused classifier does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.assets import find_weights, weights_dir
from talkinghead.errors import UserError

# Output channels of each convolution, one tuple per block; every block ends in a 2x2 max-pool.
VGG19_BLOCKS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
VGG16_BLOCKS = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)
PAPER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's, RGB in [0,1]
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)  # RGB in [0,255]
VGGFACE_STD = (1.0, 1.0, 1.0)

VGG19_FILENAMES = ("vgg19-dcbb9e9d.pth", "vgg19.pth", "vgg19.safetensors")
VGGFACE_FILENAMES = ("vgg_face_dag.pth", "vgg_face.pth", "vgg_face.safetensors")

Shape = tuple[int, ...]


def layer_names(blocks: Sequence[Sequence[int]]) -> list[str]:
    """Names of the trunk's layers in torchvision's ``features`` order (conv1_1, relu1_1, ...)."""
    names = []
    for b, channels in enumerate(blocks, start=1):
        for i in range(1, len(channels) + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


class VGGFeatures(nn.Module):
    """Convolutional trunk of a VGG network returning activations at named layers.

    forward: images ``[N,3,H,W]`` in [-1,1] -> list of activations, one per ``output_layers``
    entry, in that order. Normalisation: ``((x + 1) / 2 * pixel_scale - mean) / std``.
    """

    def __init__(
        self,
        blocks: Sequence[Sequence[int]],
        output_layers: Sequence[str] = PAPER_LAYERS,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        pixel_scale: float,
        input_size: int = 0,
    ) -> None:
        super().__init__()
        names = layer_names(blocks)
        unknown = [name for name in output_layers if name not in names]
        if unknown or not output_layers:
            raise ValueError(f"unknown VGG layer(s) {unknown}; choose from {names}")
        self.output_indices = tuple(names.index(name) for name in output_layers)
        depth = max(self.output_indices) + 1
        layers: list[nn.Module] = []
        in_channels = 3
        for channels in blocks:
            for out_channels in channels:
                layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(2, 2))
        # Indices in ``features`` equal torchvision's, so its keys map one to one.
        self.features = nn.Sequential(*layers[:depth])
        self.pixel_scale = pixel_scale
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = images
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            shrink = min(x.shape[-2:]) > self.input_size
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        x = ((x + 1) * (0.5 * self.pixel_scale) - self.mean) / self.std
        found: dict[int, Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.output_indices:
                found[index] = x
        return [found[index] for index in self.output_indices]


def vgg19_features(output_layers: Sequence[str] = PAPER_LAYERS, input_size: int = 0) -> VGGFeatures:
    """A randomly initialised VGG19 trunk with ImageNet normalisation (load weights separately)."""
    return VGGFeatures(
        VGG19_BLOCKS,
        output_layers,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pixel_scale=1.0,
        input_size=input_size,
    )


def vggface_features(
    output_layers: Sequence[str] = PAPER_LAYERS, input_size: int = 0
) -> VGGFeatures:
    """A randomly initialised VGG-Face (VGG16) trunk with VGG-Face's [0,255] mean subtraction."""
    return VGGFeatures(
        VGG16_BLOCKS,
        output_layers,
        mean=VGGFACE_MEAN,
        std=VGGFACE_STD,
        pixel_scale=255.0,
        input_size=input_size,
    )


def _conv_layout(
    blocks: Sequence[Sequence[int]], file_key: str
) -> tuple[dict[str, Shape], dict[str, str]]:
    """Required file keys with shapes, and file key -> ``features.N`` module key, for the convs.

    ``file_key`` formats a conv's file prefix from ``index`` (torchvision position), ``block``
    and ``i`` (1-based position within the block).
    """
    names = layer_names(blocks)
    shapes: dict[str, Shape] = {}
    to_module: dict[str, str] = {}
    in_channels = 3
    for b, channels in enumerate(blocks, start=1):
        for i, out_channels in enumerate(channels, start=1):
            index = names.index(f"conv{b}_{i}")
            prefix = file_key.format(index=index, block=b, i=i)
            shapes[f"{prefix}.weight"] = (out_channels, in_channels, 3, 3)
            shapes[f"{prefix}.bias"] = (out_channels,)
            to_module[f"{prefix}.weight"] = f"features.{index}.weight"
            to_module[f"{prefix}.bias"] = f"features.{index}.bias"
            in_channels = out_channels
    return shapes, to_module


def _head_layout(prefixes: Sequence[str], sizes: Sequence[tuple[int, int]]) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for prefix, (out_features, in_features) in zip(prefixes, sizes):
        shapes[f"{prefix}.weight"] = (out_features, in_features)
        shapes[f"{prefix}.bias"] = (out_features,)
    return shapes


_FC_SIZES_IMAGENET = ((4096, 512 * 7 * 7), (4096, 4096), (1000, 4096))
_FC_SIZES_VGGFACE = ((4096, 512 * 7 * 7), (4096, 4096), (2622, 4096))


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the file is not what we need
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot read weights ({reason[:200]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return dict(state)


def _short_list(items: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(
    path: Path,
    state: Mapping[str, Tensor],
    required: Mapping[str, Shape],
    optional: Mapping[str, Shape],
    kind: str,
) -> None:
    """Raise a one-line UserError naming ``path`` unless ``state`` has exactly the expected keys."""
    missing = [key for key in required if key not in state]
    unexpected = [key for key in state if key not in required and key not in optional]
    expected = {**required, **optional}
    wrong = [
        f"{key} {list(state[key].shape)} != {list(expected[key])}"
        for key in state
        if key in expected and tuple(state[key].shape) != expected[key]
    ]
    problems = []
    if missing:
        problems.append(f"missing {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {_short_list(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_short_list(wrong, 2)}")
    if problems:
        raise UserError(f"{path}: not {kind} ({'; '.join(problems)})")


def _load_into(
    network: VGGFeatures, state: Mapping[str, Tensor], to_module: Mapping[str, str]
) -> VGGFeatures:
    wanted = network.state_dict()
    subset = {to_module[key]: state[key].float() for key in to_module if to_module[key] in wanted}
    network.load_state_dict(subset, strict=True)
    return network.eval().requires_grad_(False)


def find_vgg19(path: str | Path | None = None) -> Path | None:
    """An explicit VGG19 file (must exist) or the first of VGG19_FILENAMES in the weights folder."""
    return find_weights(path, VGG19_FILENAMES)


def find_vggface(path: str | Path | None = None) -> Path | None:
    """An explicit VGG-Face file (must exist) or the first of VGGFACE_FILENAMES there."""
    return find_weights(path, VGGFACE_FILENAMES)


def _not_found(what: str, filenames: Sequence[str]) -> UserError:
    return UserError(
        f"{what} weights not found: pass a path or put {' or '.join(filenames)} in {weights_dir()}"
    )


def load_vgg19(
    path: str | Path | None = None,
    *,
    output_layers: Sequence[str] = PAPER_LAYERS,
    input_size: int = 0,
) -> VGGFeatures:
    """VGG19 trunk from torchvision's state dict, frozen and in eval mode."""
    found = find_vgg19(path)
    if found is None:
        raise _not_found("VGG19", VGG19_FILENAMES)
    state = read_state_dict(found)
    required, to_module = _conv_layout(VGG19_BLOCKS, "features.{index}")
    optional = _head_layout(("classifier.0", "classifier.3", "classifier.6"), _FC_SIZES_IMAGENET)
    check_state_dict(
        found, state, required, optional, "a torchvision VGG19 state dict (vgg19, no batch norm)"
    )
    return _load_into(vgg19_features(output_layers, input_size), state, to_module)


def load_vggface(
    path: str | Path | None = None,
    *,
    output_layers: Sequence[str] = PAPER_LAYERS,
    input_size: int = 0,
) -> VGGFeatures:
    """VGG-Face trunk from the ``vgg_face_dag.pth`` state dict, frozen and in eval mode."""
    found = find_vggface(path)
    if found is None:
        raise _not_found("VGG-Face", VGGFACE_FILENAMES)
    state = read_state_dict(found)
    required, to_module = _conv_layout(VGG16_BLOCKS, "conv{block}_{i}")
    optional = _head_layout(("fc6", "fc7", "fc8"), _FC_SIZES_VGGFACE)
    check_state_dict(found, state, required, optional, "a VGG-Face state dict (vgg_face_dag keys)")
    return _load_into(vggface_features(output_layers, input_size), state, to_module)
