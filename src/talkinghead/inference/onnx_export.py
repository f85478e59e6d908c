"""One person's per-frame network as an ONNX graph (run by :mod:`.onnx_backend`).

What is baked in and what is fed. A graph is exported per person: their generator (the bundle's
G, or their fine-tuned G'), their psi and, for the warp family, their encoded shots are
constants, so ONNX Runtime folds everything that depends on the shots alone (their features,
their downsampled pixels) once. Per frame the graph takes:

- ``landmark_image [N,3,S,S]`` float32 in [-1,1]: the target landmarks drawn as the torch path
  draws them (:func:`draw_landmarks_batch`), on the CPU side;
- warp family only: ``target_points [N,68,2]`` (pixels; the pose prior over shots) and
  ``analytic_grid [N,K,f,f,2]``: the thin-plate-spline map target -> shot (:func:`flow.tps_grid`).
  Its fit is a float64 linear solve (``torch.linalg.solve``), which ONNX has no op for, so it runs
  outside the graph, exactly as the torch path computes it; the motion net, the warps
  (GridSample: :func:`sample_border`), the blend and the decoder run inside.

and returns ``image [N,3,S,S]`` in [-1,1]. The batch dimension is dynamic. Spectral norms are
folded into plain weights (eval mode runs no power iteration, so the weights are the same).
``K``, ``f`` and the shots' landmarks are in the file's metadata, so a saved file renders with
``onnx_backend.OnnxFrameModel`` alone. Exported with the TorchScript exporter (``dynamo=False``).
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.data.episodes import to_tensor
from talkinghead.errors import UserError
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import MAX_RENDER_SHOTS, TalkingHead, spread_shots
from talkinghead.landmarks.rasterize import draw_landmarks_batch
from talkinghead.models import build_generator, flow, frozen_copy, uses_shots
from talkinghead.models.warp_generator import Shots, WarpGenerator, blend_shots, pose_distance

OPSET = 17
METADATA_PREFIX = "talkinghead."
# Example batch for tracing: not 1, so that the broadcast of the shots over the batch is traced.
EXPORT_BATCH = 2
RESHAPES = ("Unsqueeze", "Squeeze", "Reshape", "Identity")  # ops that keep a tensor's values


def require_onnxruntime():
    """The onnxruntime and onnx modules, or a one-line error naming the extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise UserError(
            f"the ONNX Runtime backend needs {exc.name}: install talkinghead[onnx]"
        ) from None
    return onnxruntime


class WarpFrameNet(nn.Module):
    """A warp-family G with one person's shots and psi baked in (see the module docstring).

    ``forward(landmark_image [N,3,S,S], target_points [N,68,2], analytic_grid [N,K,f,f,2])``
    -> ``[N,3,S,S]`` in [-1,1]: :meth:`WarpGenerator.forward` with the analytic grid given.

    The shots' maps (what the motion net reads of them, their pixels, their encoder features)
    are constants, warped for every frame by :func:`sample_border`: the arithmetic of
    :func:`flow.warp` (bilinear, border padding) as GridSample with zeros padding.
    """

    def __init__(self, generator: WarpGenerator, shots: Shots, psi: Tensor) -> None:
        super().__init__()
        self.generator = generator
        self.num_shots = shots.frames.shape[1]
        self.register_buffer("psi", psi.reshape(1, -1))
        self.register_buffer("points", shots.points)  # [1,K,68,2]
        # What the motion net reads of each shot, at flow size (shot-only: computed once here).
        maps = [generator._shot_small(shots, 1), shots.frames[0], *shots.features]  # each [K,C,s,s]
        self.maps = [f"map_{i}" for i in range(len(maps))]
        for name, shot_maps in zip(self.maps, maps):
            self.register_buffer(name, shot_maps.contiguous())

    def _warped(self, index: int, grid: Tensor, n: int) -> Tensor:
        """Map ``index`` of every shot warped with ``grid [N*K,f,f,2]``: ``[N*K,C,s,s]``."""
        maps = getattr(self, self.maps[index])
        return sample_border(maps.expand(n, -1, -1, -1, -1).flatten(0, 1), grid)

    def forward(self, landmark_image: Tensor, target_points: Tensor, analytic_grid: Tensor):
        g, n, k = self.generator, landmark_image.shape[0], self.num_shots
        flow_size = g.config.flow_size
        analytic = analytic_grid.flatten(0, 1)  # [N*K,f,f,2]
        # Motion (WarpGenerator._motion): learned residual and confidence on the analytic map.
        target_small = F.interpolate(landmark_image, size=flow_size, mode="area")
        target_small = target_small[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        warped_small = self._warped(0, analytic, n)
        residual, confidence = g.motion(torch.cat([target_small, warped_small], 1))
        grid = analytic + g.config.flow_residual_scale * residual.permute(0, 2, 3, 1)
        points = self.points.expand(n, -1, -1, -1)
        prior = -g.log_pose_temperature.exp() * pose_distance(points, target_points)
        logits = confidence + prior.flatten()[:, None, None]
        # Blend the warped shots and refine (WarpGenerator.forward).
        weights = torch.softmax(logits.view(n, k, *logits.shape[1:]), dim=1)
        warped_rgb, *warped_features = [
            blend_shots(self._warped(index, grid, n), weights, n, k)
            for index in range(1, len(self.maps))
        ]
        target_features = g.target_encoder.features(landmark_image)
        # psi as [1,P]: every AdaIN takes its shared-psi branch, whose scale and shift are then
        # constants of the graph (fold_group_norms puts them into InstanceNormalization).
        x = g._decode(target_features, warped_features, self.psi)
        rgb, mask = torch.tanh(x[:, :3]), torch.sigmoid(x[:, 3:])
        return mask * warped_rgb + (1 - mask) * rgb


def sample_border(maps: Tensor, grid: Tensor) -> Tensor:
    """:func:`flow.warp` of square ``maps [N,C,s,s]`` (bilinear, border padding) for ONNX.

    Border padding clamps each sampled point to the pixel centres; clamping the grid to them
    first and padding with zeros reads the same pixels with the same weights (a clamped point's
    neighbour outside the map has weight 0). ONNX Runtime's GridSample took 4.8x as long with
    border padding as with zeros (1 thread, 3x128x128 maps). With zeros it took 0.15-0.85x the
    time of the gathers and weighted sums this export used before, on every map of the bundled
    model (3 to 64 channels, 1 and 8 shots).
    """
    size = maps.shape[-1]
    grid = flow.resize_grid(grid, size).clamp(-1 + 1 / size, 1 - 1 / size)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class PaperFrameNet(nn.Module):
    """The paper's G with psi baked in: ``forward(landmark_image [N,3,S,S]) -> [N,3,S,S]``."""

    def __init__(self, generator: nn.Module, psi: Tensor) -> None:
        super().__init__()
        self.generator = generator
        self.register_buffer("psi", psi.reshape(1, -1))

    def forward(self, landmark_image: Tensor) -> Tensor:
        return self.generator(landmark_image, self.psi.expand(landmark_image.shape[0], -1))


def frame_net(head: TalkingHead, person: Person) -> tuple[nn.Module, dict]:
    """The person's per-frame network (fp32, CPU, spectral norms folded) and its metadata."""
    generator = frozen_copy(head._generator_for(person), head.preset.model)
    psi = person.psi.float().cpu()
    metadata = {
        "family": "warp" if uses_shots(generator) else "paper",
        "image_size": head.image_size,
        "model_hash": head.model_hash,
        "psi": "baked",
    }
    if not uses_shots(generator):
        return PaperFrameNet(generator, psi).eval(), metadata
    picks = spread_shots(person.shot_landmarks, MAX_RENDER_SHOTS)
    points = person.shot_landmarks[picks].astype(np.float32)
    frames = to_tensor(person.shots[picks])[None]
    drawn = to_tensor(draw_landmarks_batch(person.shot_landmarks[picks], head.image_size))[None]
    with torch.no_grad():
        shots = generator.encode_shots(frames, drawn, torch.from_numpy(points)[None])
    metadata |= {"flow_size": generator.config.flow_size, "shot_points": points.tolist()}
    return WarpFrameNet(generator, shots, psi).eval(), metadata


def export_onnx(head: TalkingHead, person: Person) -> bytes:
    """The person's per-frame network as an ONNX model (bytes), metadata included."""
    require_onnxruntime()
    import onnx

    net, metadata = frame_net(head, person)
    size = head.image_size
    inputs: tuple = (torch.zeros(EXPORT_BATCH, 3, size, size),)
    names = ["landmark_image"]
    if metadata["family"] == "warp":
        k, f = net.num_shots, metadata["flow_size"]
        points = torch.from_numpy(np.asarray(metadata["shot_points"][0], np.float32))
        inputs += (points.expand(EXPORT_BATCH, -1, -1), torch.zeros(EXPORT_BATCH, k, f, f, 2))
        names += ["target_points", "analytic_grid"]
    # Traced in channels-last, so that nearest 2x upsampling takes its F.interpolate branch
    # (blocks.upsample_2x), which exports as one Resize, not a broadcast that ONNX Runtime
    # materialises. The graph itself has no memory format.
    net = net.to(memory_format=torch.channels_last)
    inputs = tuple(_channels_last(t) for t in inputs)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False) handles this graph as is; its deprecation
        # notice and the tracer's notes on shape arithmetic are not for the user.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            inputs,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=["image"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "image"]},
        )
    model = fold_constants(onnx.load_from_string(buffer.getvalue()))
    fold_group_norms(model)
    for dim, value in zip(model.graph.output[0].type.tensor_type.shape.dim, (0, 3, size, size)):
        if value:  # name the output's fixed sizes (the tracer leaves them symbolic)
            dim.dim_value = value
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    return model.SerializeToString()


def fold_constants(model):
    """The model with every value computable from constants alone computed (ONNX Runtime's
    basic, provider-independent graph optimisations: constant folding, redundant nodes), e.g.
    each AdaIN's scale and shift sliced out of the baked psi, which the exporter leaves as ops.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # its notes on unused initializers are not for the user
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "folded.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def fold_group_norms(model) -> int:
    """Rewrite group norms with a group per channel as one 4-D InstanceNormalization each.

    The exporter writes ``group_norm(x, C, weight, bias)`` (AdaIN with its baked psi, and the
    encoders' instance norms) as five ops: Reshape to ``[N,C,-1]``, InstanceNormalization with
    unit scale, Reshape back, Mul by the weight, Add the bias. With a group per channel that is
    InstanceNormalization of ``x`` with the weight and bias as its own scale and bias: the same
    function, one pass over the activations instead of three (1.05-1.18x the speed of the
    whole graph in ONNX Runtime, 1 shot at batch 8). Returns how many were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {output: node for node in graph.node for output in node.output}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)

    def only_user(name: str, op_type: str):
        found = users.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    def other_constant(node, name: str):
        """The node's other operand if it is a constant, through shape-only ops (the values
        are used flat)."""
        others = [i for i in node.input if i != name]
        if len(others) != 1:
            return None
        source = producer.get(others[0])
        while others[0] not in constants and source is not None and source.op_type in RESHAPES:
            others = source.input[:1]
            source = producer.get(others[0])
        return constants.get(others[0])

    replaced, dropped = {}, set()
    for norm in graph.node:
        if norm.op_type != "InstanceNormalization" or len(norm.input) != 3:
            continue
        flatten = producer.get(norm.input[0])
        unit, zero = constants.get(norm.input[1]), constants.get(norm.input[2])
        unflatten = only_user(norm.output[0], "Reshape")
        scale = unflatten and only_user(unflatten.output[0], "Mul")
        shift = scale and only_user(scale.output[0], "Add")
        if flatten is None or flatten.op_type != "Reshape" or unit is None or zero is None:
            continue
        if shift is None or len(users.get(flatten.output[0], [])) != 1:
            continue
        channels = unit.size
        target = constants.get(flatten.input[1])
        weight, bias = (
            other_constant(scale, unflatten.output[0]),
            other_constant(shift, scale.output[0]),
        )
        if target is None or target.tolist()[1:] != [channels, -1]:
            continue
        if weight is None or bias is None or weight.size != channels or bias.size != channels:
            continue
        if not (np.all(unit == 1) and np.all(zero == 0)):
            continue
        names = [f"{norm.name}/folded_scale", f"{norm.name}/folded_bias"]
        for name, value in zip(names, (weight, bias)):
            graph.initializer.append(
                numpy_helper.from_array(value.reshape(channels).astype(np.float32), name)
            )
        epsilon = [a for a in norm.attribute if a.name == "epsilon"]
        folded = helper.make_node(
            "InstanceNormalization", [flatten.input[0], *names], [shift.output[0]], norm.name
        )
        folded.attribute.extend(epsilon)
        replaced[id(norm)] = folded
        dropped |= {id(flatten), id(unflatten), id(scale), id(shift)}
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    # Drop what fed only the removed ops (the Shape of x for the Reshape back, ...).
    while True:
        wanted = {o.name for o in graph.output} | {i for n in kept for i in n.input}
        alive = [n for n in kept if any(o in wanted for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:  # ONNX Runtime warns about each one left
        graph.initializer.remove(init)
    return len(replaced)


def _channels_last(tensor: Tensor) -> Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


@torch.no_grad()
def reference_render(
    head: TalkingHead, person: Person, landmarks: np.ndarray, dtype=torch.float32
) -> np.ndarray:
    """PyTorch's frames for parity checks: ``[T,3,S,S]`` in [-1,1], on the CPU in ``dtype``
    with NCHW tensors: G's own forward (not this module's graph), shots chosen as
    ``TalkingHead`` chooses them. (``TalkingHead.render`` runs channels-last, whose group
    norm is less exact on near-constant landmark images: ~1e-3 at the output.)"""
    generator = build_generator(head.preset.model).eval()
    generator.load_state_dict(head._generator_for(person).state_dict())
    generator = generator.to(dtype)
    drawn = to_tensor(draw_landmarks_batch(landmarks, head.image_size)).contiguous().to(dtype)
    psi = person.psi.to(dtype)[None].expand(len(landmarks), -1)
    if not uses_shots(generator):
        return generator(drawn, psi).float().numpy()
    picks = spread_shots(person.shot_landmarks, MAX_RENDER_SHOTS)
    points = torch.from_numpy(person.shot_landmarks[picks]).to(dtype)
    shot_drawn = to_tensor(draw_landmarks_batch(person.shot_landmarks[picks], head.image_size))
    frames = to_tensor(person.shots[picks]).to(dtype)
    shots = generator.encode_shots(frames[None], shot_drawn.to(dtype)[None], points[None])
    targets = torch.from_numpy(np.asarray(landmarks, np.float32)).to(dtype)
    return generator(drawn, targets, psi, shots).image.float().numpy()


def describe(path: Path) -> str:
    """One line: the graph's inputs and output with their shapes, and what is baked in."""
    import onnx

    model = onnx.load(str(path))

    def shape(value) -> str:
        dims = value.type.tensor_type.shape.dim
        return "[" + ",".join(d.dim_param or str(d.dim_value) for d in dims) + "]"

    inputs = ", ".join(f"{v.name} {shape(v)}" for v in model.graph.input)
    outputs = ", ".join(f"{v.name} {shape(v)}" for v in model.graph.output)
    return f"inputs {inputs} -> {outputs}; psi, shots and weights baked in"
