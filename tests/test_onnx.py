"""The ONNX Runtime backend: parity with PyTorch on real frames, dynamic batch, int8, the CLI.

Parity is measured against PyTorch in fp32 with NCHW tensors (``reference_render``: G's own
forward). ``TalkingHead.render`` runs channels-last, whose group-norm kernel is itself ~1e-3
off (a float64 run shows it: on the bundled model the render path is 1.2e-3 from float64, ONNX
Runtime 1.5e-5), so against it the uint8 frames are compared (at most one level apart).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import write_bundle

from talkinghead import cli
from talkinghead.config import preset as presets
from talkinghead.errors import UserError
from talkinghead.evaluation.scoring import find_landmarks
from talkinghead.inference import onnx_backend
from talkinghead.inference.onnx_backend import OnnxFrameModel, OnnxRenderer
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.provenance import verify_file

PARITY = 1e-3  # the bar: max abs difference to PyTorch, images in [-1,1]


@pytest.fixture(scope="module")
def warp_bundle(tmp_path_factory):
    """A tiny warp-and-refine bundle (untrained, seeded), as `talkinghead export` writes it."""
    path = tmp_path_factory.mktemp("warp") / "tiny-warp.safetensors"
    return write_bundle(path, presets.load("tiny-warp"))


@pytest.fixture(scope="module")
def warp_head(warp_bundle):
    return TalkingHead.from_checkpoint(warp_bundle)


@pytest.fixture(scope="module")
def clip_person(warp_head, clip_frames):
    """Three real frames of the clip as shots: the warp generator blends K = 3 shots."""
    return warp_head.personalize(list(clip_frames[[0, 45, 90]]), finetune_steps=0, progress=False)


@pytest.fixture(scope="module")
def driver_landmarks(clip_frames):
    """dlib's landmarks on 10 real frames of the sample clip (frame pixels)."""
    found = find_landmarks(clip_frames[5::12][:10])
    assert not np.isnan(found).any()
    return found


def _targets(head, person, driver):
    return head.target_landmarks(person, driver, driver[0], "relative")


def _check_parity(head, person, targets):
    renderer = OnnxRenderer(head, num_threads=1)
    images = renderer.render_float(person, targets, batch_size=4)
    reference = onnx_backend.reference_render(head, person, targets)
    assert images.shape == reference.shape == (len(targets), 3, head.image_size, head.image_size)
    assert np.abs(images - reference).max() <= PARITY
    assert images.std() > 0.1  # a picture, not a constant
    # The uint8 frames of TalkingHead.render (channels-last PyTorch) and of the renderer.
    frames = renderer.render(person, targets, batch_size=4)
    expected = head.render(person, targets, batch_size=4)
    assert frames.shape == expected.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - expected).max() <= 1
    return renderer, images


def test_warp_family_matches_pytorch_on_real_frames(warp_head, clip_person, driver_landmarks):
    targets = _targets(warp_head, clip_person, driver_landmarks)
    renderer, _ = _check_parity(warp_head, clip_person, targets)
    model = renderer.model_for(clip_person)
    assert model.metadata["family"] == "warp" and len(model.shot_points) == 3


def test_every_norm_is_one_instance_normalization_with_its_scale(warp_head, clip_person):
    """AdaIN with the baked psi and the encoders' instance norms export as one op each, with
    the scale and shift inside it (not Reshape, InstanceNormalization, Reshape, Mul, Add)."""
    from torch import nn

    from talkinghead.models.blocks import AdaptiveInstanceNorm

    model = onnx.load_from_string(onnx_backend.export_onnx(warp_head, clip_person))
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    layers = [
        m
        for m in warp_head.generator.modules()
        if isinstance(m, AdaptiveInstanceNorm | nn.GroupNorm)
    ]
    # The shot encoder runs at export time (its maps are constants), not in the graph.
    in_graph = [
        m for m in layers if not any(m is x for x in warp_head.generator.shot_encoder.modules())
    ]
    assert len(norms) == len(in_graph) > 0
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert not any(producers.get(norm.input[0]) == "Reshape" for norm in norms)
    used = {i for n in model.graph.node for i in n.input}
    assert all(init.name in used for init in model.graph.initializer)  # ORT warns of each
    scales = [constants[norm.input[1]] for norm in norms]
    assert all(scale.ndim == 1 for scale in scales)
    # psi's scales are inside the op (the untrained encoders' instance norms have unit scales).
    adain = sum(isinstance(m, AdaptiveInstanceNorm) for m in in_graph)
    assert sum(not np.all(scale == 1) for scale in scales) == adain > 0


def test_paper_family_matches_pytorch_on_real_frames(head, person, driver_landmarks):
    _check_parity(head, person, _targets(head, person, driver_landmarks))


def test_bundled_default_model_matches_pytorch(astronaut, driver_landmarks):
    default = TalkingHead.from_pretrained(device="cpu", precision="fp32")
    person = default.personalize([astronaut], finetune_steps=0, progress=False)
    _check_parity(default, person, _targets(default, person, driver_landmarks[:4]))


def test_batch_size_is_dynamic(warp_head, clip_person, driver_landmarks):
    targets = _targets(warp_head, clip_person, driver_landmarks)
    renderer = OnnxRenderer(warp_head, num_threads=1)
    one = renderer.render_float(clip_person, targets, batch_size=1)
    five = renderer.render_float(clip_person, targets, batch_size=5)
    assert one.shape == five.shape == (10, 3, 64, 64)
    assert np.abs(one - five).max() <= 1e-5


def test_a_batch_split_over_threads_renders_what_one_thread_renders(
    warp_head, clip_person, driver_landmarks
):
    targets = _targets(warp_head, clip_person, driver_landmarks[:5])
    alone = OnnxRenderer(warp_head, num_threads=1).render_float(clip_person, targets, 5)
    model = OnnxRenderer(warp_head, num_threads=2).model_for(clip_person)
    split = model.run(targets)  # parts of 3 and 2 frames, one thread each
    assert model._pool is not None and model._wide is None
    single = np.concatenate([model.run(one[None]) for one in targets])  # one session, 2 threads
    assert model._wide is not None
    assert split.shape == single.shape == alone.shape == (5, 3, 64, 64)
    assert np.abs(split - alone).max() <= 1e-5
    assert np.abs(single - alone).max() <= 1e-5


def test_render_leaves_torchs_thread_count_as_the_caller_set_it(
    warp_head, clip_person, driver_landmarks
):
    # The frame's CPU side runs with one torch thread (beside ONNX Runtime's spinning workers).
    targets = _targets(warp_head, clip_person, driver_landmarks[:2])
    renderer = OnnxRenderer(warp_head, num_threads=1)
    before, frames = torch.get_num_threads(), []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            frames.append(renderer.render(clip_person, targets))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert frames[0].shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(frames[0], frames[1])


def test_head_dispatches_to_the_backend_renderer(warp_head, clip_person, driver_landmarks):
    targets = _targets(warp_head, clip_person, driver_landmarks[:3])
    renderer = OnnxRenderer(warp_head, num_threads=1)
    warp_head.backend_renderer = renderer
    try:
        frames = warp_head.render(clip_person, targets)
    finally:
        warp_head.backend_renderer = None
    assert renderer.model_for(clip_person) is renderer._models[0][1]  # built once, cached
    np.testing.assert_array_equal(frames, renderer.render(clip_person, targets))


# Mean abs difference to fp32 measured on this model: static 0.0021, dynamic 0.0012 (of 2).
@pytest.mark.parametrize(("mode", "bound"), [("static", 0.01), ("dynamic", 0.01)])
def test_int8_runs_and_stays_close(warp_head, clip_person, driver_landmarks, mode, bound):
    targets = _targets(warp_head, clip_person, driver_landmarks)
    fp32 = OnnxRenderer(warp_head, num_threads=1).render_float(clip_person, targets)
    renderer = OnnxRenderer(warp_head, int8=mode, num_threads=1)
    model = onnx.load_from_string(renderer.model_bytes(clip_person))
    ops = {node.op_type for node in model.graph.node}
    assert ("QuantizeLinear" if mode == "static" else "ConvInteger") in ops
    int8 = renderer.render_float(clip_person, targets)
    difference = np.abs(int8 - fp32)
    assert int8.shape == fp32.shape and 0 < difference.mean() <= bound


def test_cli_export_onnx_then_animate_with_onnxruntime(warp_bundle, short_videos, tmp_path):
    from talkinghead import assets, video

    photo = str(assets.astronaut_path())
    common = ["--model", str(warp_bundle), "--source", photo, "--device", "cpu"]
    # Two fine-tuning steps: the person's own G' is what gets baked in.
    export = ["export-onnx", *common, "--finetune-steps", "2", "--no-progress", "--int8"]
    code = cli.main([*export, "--out", str(tmp_path / "onnx")])
    assert code == 0
    fp32, int8 = tmp_path / "onnx" / "person.onnx", tmp_path / "onnx" / "person-int8-static.onnx"
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [int8.name, fp32.name]
    onnx.checker.check_model(onnx.load(str(fp32)))
    session = onnxruntime.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [
        "landmark_image",
        "target_points",
        "analytic_grid",
    ]
    # The file alone renders (its metadata holds the shots' landmarks), batch 3.
    landmarks = OnnxFrameModel.load(fp32).shot_points.numpy()[[0, 0, 0]]
    assert OnnxFrameModel.load(int8).run(landmarks).shape == (3, 3, 64, 64)
    out = tmp_path / "out.mp4"
    driver = short_videos / "part0.mp4"
    args = ["animate", *common, "--driver", str(driver), "--out", str(out), "--no-progress"]
    args += ["--finetune-steps", "0"]
    assert cli.main([*args, "--backend", "onnxruntime"]) == 0
    assert len(list(video.read_frames(out))) == 20
    report = verify_file(out)
    assert report.marked and report.watermark.marked


def test_bad_inputs_are_one_line_errors(warp_bundle, tmp_path, capsys, monkeypatch):
    from talkinghead import assets

    photo = str(assets.astronaut_path())
    out = str(tmp_path / "x.onnx")
    not_a_person = tmp_path / "person.safetensors"
    not_a_person.write_bytes(b"\x00" * 64)
    cases = {
        "no such person file": ["--person", str(tmp_path / "missing.safetensors")],
        "not a readable person file": ["--person", str(not_a_person)],
        "missing.safetensors": [
            "--model",
            str(tmp_path / "missing.safetensors"),
            "--source",
            photo,
        ],
    }
    for expected, args in cases.items():
        model = ["--source", photo] if "--model" in args else ["--model", str(warp_bundle)]
        assert cli.main(["export-onnx", *model, *args, "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not list(tmp_path.glob("*.onnx*"))
    with pytest.raises(UserError, match="no such ONNX model file"):
        OnnxFrameModel.load(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        OnnxFrameModel.load(not_a_person)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(UserError, match=r"install talkinghead\[onnx\]"):
        onnx_backend.require_onnxruntime()
