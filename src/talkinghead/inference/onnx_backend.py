"""ONNX Runtime backend: ``TalkingHead.render`` with each person's network run by ONNX Runtime.

The graph and what it takes are described in :mod:`.onnx_export`; here: the sessions (intra-op
threads = the machine's cores, every graph optimisation), the CPU side of each frame (landmark
image and thin-plate spline, as the torch path computes them), int8 variants (dynamic: weights
only; static: weights and inputs of every convolution, calibrated on the person's own shots:
real frames), the renderer ``TalkingHead`` dispatches to, and writing the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import UserError
from talkinghead.inference.onnx_export import (
    METADATA_PREFIX,
    describe,
    export_onnx,
    reference_render,
    require_onnxruntime,
)
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.landmarks.rasterize import draw_landmarks_batch
from talkinghead.models import flow

__all__ = [
    "INT8_MODES",
    "OnnxFrameModel",
    "OnnxRenderer",
    "describe",
    "export_onnx",
    "quantize",
    "reference_render",
    "require_onnxruntime",
    "write_onnx",
]

INT8_MODES = ("dynamic", "static")


def session_options(num_threads: int | None = None):
    """Intra-op threads = this process's cores (or ``num_threads``), every graph optimisation."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or _process_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Workers spin between ops (ONNX Runtime's default): sleeping instead was 1.1-1.3x slower.
    return options


def _process_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


class OnnxFrameModel:
    """An exported per-frame network in ONNX Runtime sessions, with the CPU-side steps.

    ``run(landmarks [N,68,2] crop px) -> [N,3,S,S]`` float32 in [-1,1], on ``num_threads``
    threads (default: this process's cores). A batch of at least that many frames is split in
    as many parts, each run by a one-thread session in its own thread (ONNX Runtime releases
    the GIL): with each op's work split over threads instead, the threads waited for each other
    at every op. At batch 8 on 2 cores split batches ran 1.15x (1 shot) and 1.18x (8 shots) as
    fast, in alternating runs. Fewer frames run in one session with all the threads.
    """

    def __init__(self, model: bytes, num_threads: int | None = None, name: str = "ONNX model"):
        self.num_threads, self.threads = num_threads, num_threads or _process_cores()
        self.name, self.session = name, self._session(model, 1, name)  # shared by the parts
        self._wide = self.session if self.threads == 1 else None
        self._pool: ThreadPoolExecutor | None = None
        props = self.session.get_modelmeta().custom_metadata_map
        meta = {
            k[len(METADATA_PREFIX) :]: json.loads(v)
            for k, v in props.items()
            if k.startswith(METADATA_PREFIX)
        }
        if "family" not in meta:
            raise UserError(f"{name}: not a talkinghead ONNX model (no talkinghead metadata)")
        self.model, self.metadata, self.image_size = model, meta, int(meta["image_size"])
        self.shot_points = (
            torch.tensor(meta["shot_points"], dtype=torch.float32)
            if meta["family"] == "warp"
            else None
        )

    @staticmethod
    def _session(model: bytes, threads: int, name: str):
        ort = require_onnxruntime()
        try:
            return ort.InferenceSession(
                model, session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for a bad file
            raise UserError(f"{name}: not a readable ONNX model ({_first_line(exc)})") from None

    @classmethod
    def load(cls, path: str | Path, num_threads: int | None = None) -> OnnxFrameModel:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX model file")
        return cls(path.read_bytes(), num_threads, str(path))

    def inputs(self, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for landmarks ``[N,68,2]`` (crop pixels), as the torch path
        computes them (landmark image and thin-plate spline)."""
        drawn = draw_landmarks_batch(landmarks, self.image_size).transpose(0, 3, 1, 2)
        # episodes.to_tensor's arithmetic in NumPy (same float32 operations, same values).
        feeds = {"landmark_image": drawn.astype(np.float32) / np.float32(127.5) - np.float32(1)}
        if self.shot_points is None:
            return feeds
        points = torch.from_numpy(np.asarray(landmarks, np.float32))
        # One solve per target for all K shots, as WarpGenerator._motion does it.
        sources = self.shot_points[None].expand(len(points), -1, -1, -1)
        grid = flow.tps_grid(points, sources, self.image_size, int(self.metadata["flow_size"]))
        feeds["target_points"] = points.numpy()
        feeds["analytic_grid"] = np.ascontiguousarray(grid.numpy())  # [N,K,f,f,2]
        return feeds

    def run(self, landmarks: np.ndarray) -> np.ndarray:
        with _torch_threads(1):
            feeds = self.inputs(landmarks)
        if self.threads == 1 or len(landmarks) < self.threads:
            if self._wide is None:
                self._wide = self._session(self.model, self.threads, self.name)
            return self._wide.run(["image"], feeds)[0]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, "talkinghead-onnx")
        parts = np.array_split(np.arange(len(landmarks)), self.threads)
        part_feeds = [{k: v[p[0] : p[-1] + 1] for k, v in feeds.items()} for p in parts]
        futures = [self._pool.submit(self.session.run, ["image"], f) for f in part_feeds[1:]]
        first = self.session.run(["image"], part_feeds[0])[0]
        return np.concatenate([first, *(f.result()[0] for f in futures)])

    def render_float(self, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """:meth:`run` on batches of ``batch_size``: ``[T,3,S,S]`` for ``[T,68,2]``."""
        runs = [
            self.run(landmarks[start : start + batch_size])
            for start in range(0, len(landmarks), batch_size)
        ]
        size = self.image_size
        return np.concatenate(runs) if runs else np.zeros((0, 3, size, size), np.float32)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` inside, restored after.

    A frame's CPU side (landmark image, thin-plate spline) is small tensors in torch; run with
    torch's pool of threads it contended with ONNX Runtime's workers, which spin for a while
    after each run: on 2 cores, with one thread ONNX Runtime rendered 1.23x PyTorch's speed at
    batch 1 (one shot) where it had 1.09x, in alternating runs in one process.
    """
    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``[N,3,S,S]`` in [-1,1] -> ``[N,S,S,3]`` uint8, rounded as ``episodes.to_uint8``."""
    scaled = ((np.clip(images, -1, 1) + np.float32(1)) * np.float32(127.5)).round()
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def quantize(model: bytes, mode: str, calibration: np.ndarray | None = None) -> bytes:
    """An int8 copy of an exported model.

    Only convolutions are quantised: the sampling grids, the warp's weights and the blend stay
    float (a quantised sampling grid would move pixels). ``dynamic``: weights int8, inputs
    quantised on the fly; ``static``: weights and inputs, with ranges calibrated on
    ``calibration`` landmarks ``[T,68,2]`` (real frames: the person's own shots).
    """
    require_onnxruntime()
    from onnxruntime import quantization as q

    if mode not in INT8_MODES:
        raise UserError(f"unknown int8 mode {mode!r} ({' or '.join(INT8_MODES)})")
    folder = tempfile.TemporaryDirectory(prefix="talkinghead-onnx-")
    with folder, _quiet_root_logger():  # the quantiser logs notes on every skipped tensor
        source, prepared, out = (Path(folder.name) / n for n in ("f.onnx", "p.onnx", "q.onnx"))
        source.write_bytes(model)
        q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            q.quantize_dynamic(
                prepared, out, op_types_to_quantize=["Conv"], weight_type=q.QuantType.QInt8
            )
        else:
            if calibration is None or not len(calibration):
                raise UserError("static int8 needs calibration landmarks")
            reader = _CalibrationReader(OnnxFrameModel(model, name="calibration"), calibration)
            q.quantize_static(
                prepared,
                out,
                reader,
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
            )
        return out.read_bytes()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _CalibrationReader:
    """Feeds a static quantiser the inputs of calibration landmarks, one frame at a time."""

    def __init__(self, model: OnnxFrameModel, landmarks: np.ndarray):
        single = (landmarks[i : i + 1] for i in range(len(landmarks)))
        self.items: Iterator[dict] = (model.inputs(one) for one in single)

    def get_next(self) -> dict | None:
        return next(self.items, None)

    def rewind(self) -> None:  # quantize_static reads once
        pass


def calibration_landmarks(person: Person) -> np.ndarray:
    """Real landmarks to calibrate int8 ranges on: the person's shots, and each shot's
    landmarks moved towards the others' (poses and mouths between those seen)."""
    shots = person.shot_landmarks.astype(np.float32)
    mixes = [0.5 * (a + b) for a, b in zip(shots, np.roll(shots, 1, axis=0))]
    return np.concatenate([shots, np.stack(mixes)]) if len(shots) > 1 else shots


class OnnxRenderer:
    """``TalkingHead.render`` on ONNX Runtime: set ``head.backend_renderer = OnnxRenderer(head)``.

    Each person's network is exported (and, with ``int8``, quantised) the first time they are
    rendered and kept for the next calls (the last four people). fp32 or int8 whatever
    ``head.precision`` says: the precision of ONNX Runtime is chosen here.
    """

    def __init__(
        self, head: TalkingHead, int8: str | None = None, num_threads: int | None = None
    ) -> None:
        require_onnxruntime()
        if int8 is not None and int8 not in INT8_MODES:
            raise UserError(f"unknown int8 mode {int8!r} ({' or '.join(INT8_MODES)})")
        self.head, self.int8, self.num_threads = head, int8, num_threads
        self._models: list[tuple[Person, OnnxFrameModel]] = []

    def model_bytes(self, person: Person) -> bytes:
        """The person's ONNX model, as this renderer runs it (fp32 or int8)."""
        model = export_onnx(self.head, person)
        if self.int8 is not None:
            model = quantize(model, self.int8, calibration_landmarks(person))
        return model

    def model_for(self, person: Person) -> OnnxFrameModel:
        for cached_person, model in self._models:
            if cached_person is person:
                return model
        model = OnnxFrameModel(self.model_bytes(person), self.num_threads)
        self._models = [(person, model), *self._models[:3]]
        return model

    def frame_renderer(self, person: Person) -> OnnxFrameRenderer:
        """The person's network on its own (see :meth:`TalkingHead.frame_renderer`)."""
        return OnnxFrameRenderer(self.model_for(person))

    def render_float(
        self, person: Person, landmarks: np.ndarray, batch_size: int = 8
    ) -> np.ndarray:
        """``[T,3,S,S]`` float32 in [-1,1] for landmarks ``[T,68,2]`` (crop pixels)."""
        return self.model_for(person).render_float(landmarks, batch_size)

    def render(self, person: Person, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Frames ``[T,S,S,3]`` uint8: the contract of :meth:`TalkingHead.render`."""
        return to_uint8(self.render_float(person, landmarks, batch_size))


class OnnxFrameRenderer:
    """``renderer(landmarks [T,68,2], batch_size) -> [T,S,S,3]`` uint8 with one person's
    network. Pickled, it carries the model's bytes (sessions do not pickle) and opens a session
    where it is first called, with ``num_threads`` intra-op threads (a worker sets it first)."""

    def __init__(self, model: OnnxFrameModel):
        self.model_bytes, self.num_threads, self._model = model.model, model.num_threads, model

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    def __call__(self, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        if self._model is None or self._model.num_threads != self.num_threads:
            self._model = OnnxFrameModel(self.model_bytes, self.num_threads)
        return to_uint8(self._model.render_float(landmarks, batch_size))


def write_onnx(
    head: TalkingHead, person: Person, out: Path, int8: Sequence[str] = ()
) -> list[Path]:
    """Write the person's fp32 model to ``out`` (a file, or a folder: ``person.onnx`` in it)
    and each int8 variant beside it (``<stem>-int8-<mode>.onnx``); temp name, then rename."""
    from talkinghead.fileio import atomic_write_bytes

    path = out / "person.onnx" if out.is_dir() or not out.suffix else out
    model = export_onnx(head, person)
    atomic_write_bytes(path, model)
    written = [path]
    for mode in int8:
        variant = path.with_name(f"{path.stem}-int8-{mode}.onnx")
        atomic_write_bytes(variant, quantize(model, mode, calibration_landmarks(person)))
        written.append(variant)
    return written


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
