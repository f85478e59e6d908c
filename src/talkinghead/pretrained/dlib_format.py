"""Reader for dlib's binary model files, enough for the face-recognition ResNet.

The format (dlib/serialize.h, dlib/dnn/*.h, dlib/cuda/tensor.h), written from that public
description:

- an integer is one control byte (low nibble: how many bytes follow, bit 7: negative) and then
  its magnitude in that many little-endian bytes;
- a float is two integers, mantissa and exponent: value = mantissa * 2**exponent (exponents
  32000/32001/32002 stand for +inf/-inf/nan);
- a string is an integer length and its bytes; a bool is the character '1' or '0';
- a tensor is the version 2, its four dims (num, k, rows, cols) and the raw float32 values, and an
  "alias tensor" (a view into a layer's flat ``params``) is the version 1 and four dims.

A network is written from the loss layer inwards: the loss layer writes its version and loss
details, then every wrapper writes its version before its sub-network, so all the versions come
first (outermost first) and the layer details follow from the input layer outwards. Tag and skip
layers write nothing but their version, and ``add_prev`` does not store which tag it adds, so
the wiring between layers is not in the file: :mod:`talkinghead.models.face_identity` knows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import UserError

INPUT_LAYER = "input_rgb_image_sized"
_MAX_NAME_LENGTH = 64  # longest version string dlib writes is ~25 characters
_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's format; the caller turns it into a UserError."""


@dataclass(frozen=True)
class DlibLayer:
    """One computational layer as dlib stores it, with batch norm already folded to affine.

    ``kind``: "con", "affine", "relu", "max_pool", "avg_pool", "add_prev" or "fc".
    ``tensors``: "weight" (con: [out,in,kh,kw]; affine: [C]; fc: [out,in]) and "bias" ([out] or
    absent). ``config``: integer settings (con/pool: "window_y/x", "stride_y/x", "padding_y/x";
    con: "num_filters"; fc: "num_outputs"). A pool with window 0 averages the whole image.
    """

    kind: str
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibMetricNet:
    """A ``loss_metric`` network read from a dlib file: its layers from input to output."""

    path: Path
    input_mean: tuple[float, float, float]  # subtracted from RGB in [0,255], then / 256
    input_size: tuple[int, int]  # rows, cols
    margin: float
    distance_threshold: float  # same identity below this euclidean distance
    layers: tuple[DlibLayer, ...]
    num_wrappers: int  # tag and skip layers: not stored beyond their version


class _Stream:
    """A cursor over the file's bytes with one reader per dlib type."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, count: int) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise DlibFormatError(f"file ends early (at byte {self.pos}, {count} more wanted)")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def string(self, max_length: int = _MAX_NAME_LENGTH) -> str:
        length = self.int()
        if not 0 <= length <= max_length:
            raise DlibFormatError(f"implausible name length {length} at byte {self.pos}")
        try:
            return bytes(self._take(length)).decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"non-text name at byte {self.pos - length}") from None

    def peek_string(self, expected: str) -> bool:
        """Whether ``expected`` is the string at the cursor (the cursor does not move)."""
        start = self.pos
        try:
            return self.string() == expected
        except DlibFormatError:
            return False
        finally:
            self.pos = start

    def _dims(self, what: str, version: int) -> tuple[int, int, int, int]:
        found = self.int()
        if found != version:
            raise DlibFormatError(f"{what} version {found} at byte {self.pos}, expected {version}")
        dims = tuple(self.int() for _ in range(4))
        if min(dims) < 0:
            raise DlibFormatError(f"negative {what} size {dims} at byte {self.pos}")
        return dims

    def tensor(self) -> np.ndarray:
        dims = self._dims("tensor", 2)
        count = math.prod(dims)
        values = np.frombuffer(self._take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        return self._dims("alias tensor", 1)


def _split_params(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a layer's flat ``params`` into the alias tensors stored after it, in order."""
    flat, parts, offset = params.reshape(-1), [], 0
    for shape in shapes:
        size = math.prod(shape)
        if offset + size > flat.size:
            raise DlibFormatError(f"params hold {flat.size} values, views need more")
        parts.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return parts


def _read_window(stream: _Stream) -> dict[str, int]:
    names = ("window_y", "window_x", "stride_y", "stride_x", "padding_y", "padding_x")
    return {name: stream.int() for name in names}


def _read_con(stream: _Stream, version: str) -> DlibLayer:
    params = stream.tensor()
    config = {"num_filters": stream.int(), **_read_window(stream)}
    filters, biases = stream.alias(), stream.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        stream.float()
    use_bias = stream.bool() if version in ("con_5", "con_6") else True
    if version == "con_6" and stream.bool():
        raise DlibFormatError("con layers with a fused relu are not supported")
    weight, bias = _split_params(params, filters, (math.prod(biases),))
    tensors = {"weight": weight, "bias": bias} if use_bias else {"weight": weight}
    return DlibLayer("con", tensors, config)


def _read_affine(stream: _Stream, version: str) -> DlibLayer:
    params = stream.tensor()
    gamma, beta = stream.alias(), stream.alias()
    stream.int()  # mode: per channel (conv) or per element (fc); the shape says which
    if version == "affine_2" and stream.bool():
        raise DlibFormatError("disabled affine layers are not supported")
    weight, bias = _split_params(params, (math.prod(gamma),), (math.prod(beta),))
    return DlibLayer("affine", {"weight": weight, "bias": bias})


def _read_batch_norm(stream: _Stream) -> DlibLayer:
    """A batch-norm layer, folded into the affine layer dlib itself would turn it into."""
    params = stream.tensor()
    gamma_dims, beta_dims = stream.alias(), stream.alias()
    stream.tensor(), stream.tensor()  # batch statistics of the last training step
    running_mean, running_var = stream.tensor().reshape(-1), stream.tensor().reshape(-1)
    stream.int(), stream.int()  # num_updates, running_stats_window_size
    for _ in range(4):
        stream.float()
    eps = stream.float()
    gamma, beta = _split_params(params, (math.prod(gamma_dims),), (math.prod(beta_dims),))
    scale = gamma / np.sqrt(running_var + eps)
    return DlibLayer("affine", {"weight": scale, "bias": beta - scale * running_mean})


def _read_fc(stream: _Stream, version: str) -> DlibLayer:
    num_outputs, num_inputs = stream.int(), stream.int()
    params = stream.tensor()
    weights, biases = stream.alias(), stream.alias()
    has_bias = stream.int() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):
        stream.float()
    if version == "fc_3":
        has_bias = stream.bool() and has_bias
    weight, bias = _split_params(params, weights, (math.prod(biases),) if has_bias else (0,))
    # dlib multiplies rows of inputs by a [num_inputs, num_outputs] matrix.
    tensors = {"weight": weight.reshape(num_inputs, num_outputs).T.copy()}
    if has_bias:
        tensors["bias"] = bias
    return DlibLayer("fc", tensors, {"num_outputs": num_outputs})


def _read_layer_details(stream: _Stream) -> DlibLayer:
    version = stream.string()
    if version in ("con_4", "con_5", "con_6"):
        return _read_con(stream, version)
    if version in ("affine_", "affine_2"):
        return _read_affine(stream, version)
    if version in ("bn_con2", "bn_fc2"):
        return _read_batch_norm(stream)
    if version in ("relu_", "relu_2"):
        if version == "relu_2" and stream.bool():
            raise DlibFormatError("disabled relu layers are not supported")
        return DlibLayer("relu")
    if version in ("max_pool_2", "avg_pool_2"):
        return DlibLayer(version[:-2], config=_read_window(stream))
    if version == "add_prev_":
        return DlibLayer("add_prev")
    if version in ("fc_2", "fc_3"):
        return _read_fc(stream, version)
    raise DlibFormatError(f"unsupported layer {version!r} at byte {stream.pos}")


def _skip_layer_state(stream: _Stream, *, input_version: int | None) -> None:
    """The training state an ``add_layer`` writes after its details (flags and buffers)."""
    for _ in range(3):
        stream.bool()
    stream.tensor(), stream.tensor(), stream.tensor()  # x_grad, cached_output, gradients
    if input_version is not None and input_version >= 3:
        stream.int()  # sample expansion factor


def _read_wrapper_versions(stream: _Stream) -> tuple[int, int, int]:
    """Versions of all layers, outermost first.

    Returns the number of computational layers and of tag/skip wrappers, and the version of the
    layer holding the input (which tells whether it stores a sample expansion factor).
    """
    num_layers = num_wrappers = 0
    while True:
        version = stream.int()
        if stream.peek_string(INPUT_LAYER):
            if version not in (2, 3):
                raise DlibFormatError(f"input layer version {version}")
            return num_layers + 1, num_wrappers, version
        if version == 1:  # add_tag_layer / add_skip_layer
            num_wrappers += 1
        elif version == 2:  # add_layer
            num_layers += 1
        else:
            raise DlibFormatError(f"unexpected layer version {version} at byte {stream.pos}")


def _parse(data: bytes, path: Path) -> DlibMetricNet:
    stream = _Stream(data)
    if stream.int() != 1:
        raise DlibFormatError("does not start with a loss layer")
    loss = stream.string()
    if loss != "loss_metric_2":
        raise DlibFormatError(f"loss layer is {loss!r}, not 'loss_metric_2'")
    margin, distance_threshold = stream.float(), stream.float()
    num_layers, num_wrappers, input_version = _read_wrapper_versions(stream)
    stream.string()  # INPUT_LAYER, checked by peek
    input_mean = (stream.float(), stream.float(), stream.float())
    input_size = (stream.int(), stream.int())
    layers = []
    for index in range(num_layers):
        layers.append(_read_layer_details(stream))
        _skip_layer_state(stream, input_version=input_version if index == 0 else None)
    if stream.pos != len(stream.data):
        raise DlibFormatError(f"{len(stream.data) - stream.pos} unread bytes at the end")
    return DlibMetricNet(
        path, input_mean, input_size, margin, distance_threshold, tuple(layers), num_wrappers
    )


def read_metric_net(path: str | Path) -> DlibMetricNet:
    """Read a dlib ``loss_metric`` network file (e.g. ``dlib_face_recognition_resnet_model_v1``).

    Raises UserError naming the file when it is missing or is not such a network.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read dlib model ({exc.strerror or exc})") from None
    try:
        return _parse(data, path)
    except DlibFormatError as exc:
        raise UserError(f"{path}: not a dlib face-recognition model ({exc})") from None
