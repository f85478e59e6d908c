"""Distillation of a narrower warp decoder: the start from the teacher, learning, resume, CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from talkinghead.checkpoint import load_weights, read_info, read_state_dict, save_weights
from talkinghead.config import preset as presets
from talkinghead.config.base import to_dict
from talkinghead.config.prep import PrepConfig
from talkinghead.data.episodes import EpisodeDataset
from talkinghead.data.preprocess import run_prep
from talkinghead.errors import UserError
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.models import build_generator, build_models
from talkinghead.models.blocks import AdaptiveInstanceNorm
from talkinghead.training import distill as distillation
from talkinghead.training.distill import DistillOptions, distill, init_student

CLI = [sys.executable, "-m", "talkinghead.cli"]
NARROW = {"decoder_channels": (16, 8, 4), "num_bottleneck_blocks": 1}


def _student(**warp) -> presets.Preset:
    teacher = presets.load("tiny-warp")
    config = dataclasses.replace(teacher.model.warp_generator, **warp)
    return dataclasses.replace(
        teacher, model=dataclasses.replace(teacher.model, warp_generator=config)
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, short_videos) -> Path:
    root = tmp_path_factory.mktemp("distill_data")
    run_prep([short_videos], root, PrepConfig(crop_size=64, min_track_frames=8), progress=False)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny warp bundle whose output is half decoder, half warped shots (mask logit 0)."""
    preset = presets.load("tiny-warp")
    torch.manual_seed(0)
    models = build_models(preset.model)
    with torch.no_grad():
        models.generator.output_conv.bias[3] = 0.0
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_weights(path, dict(models._asdict()), preset, {"step": 0}, half=True)
    return path


def _batch(dataset: Path, k: int = 2):
    data = EpisodeDataset(dataset, k, 64)
    rng = np.random.default_rng(0)
    return distillation._batch(data, rng, DistillOptions(batch_size=3), 0)


def _psi_by_layer(generator, psi: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    layers, offset = {}, 0
    for name, module in generator.named_modules():
        if isinstance(module, AdaptiveInstanceNorm):
            c = module.channels
            layers[name] = (psi[:, offset : offset + c], psi[:, offset + c : offset + 2 * c])
            offset += 2 * c
    assert offset == psi.shape[1]
    return layers


def _models(teacher_path: Path, student_preset: presets.Preset):
    models = build_models(presets.load("tiny-warp").model)
    load_weights(teacher_path, dict(models._asdict()))
    torch.manual_seed(1)
    student = build_generator(student_preset.model)
    init_student(student, models.generator)
    return models, student.eval()


def test_a_student_with_the_teachers_decoder_starts_as_the_teacher(teacher, dataset):
    models, student = _models(teacher, _student())
    batch = _batch(dataset)
    embedding = torch.randn(3, models.generator.embedding_dim)
    with torch.no_grad():
        shots = models.generator.encode_shots(
            batch.source_frames, batch.source_landmarks, batch.source_points
        )
        args = (batch.target_landmarks, batch.target_points)
        wanted = models.generator.eval()(*args, models.generator.project(embedding), shots)
        got = student(*args, student.project(embedding), shots)
    assert wanted.image.std() > 0.05
    torch.testing.assert_close(got.image, wanted.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.mask, wanted.mask, rtol=0, atol=1e-6)


def test_a_narrower_student_takes_the_teachers_leading_channels_and_psi_rows(teacher):
    models, student = _models(teacher, _student(**NARROW))
    theirs = models.generator.state_dict()
    ours = student.state_dict()
    for name in ("shot_encoder", "target_encoder", "motion"):
        for key, value in ours.items():
            if key.startswith(name):
                torch.testing.assert_close(value, theirs[key], rtol=0, atol=0)
    key = "fuse.parametrizations.weight.original"
    assert ours[key].shape[0] == 16 < theirs[key].shape[0]
    torch.testing.assert_close(ours[key], theirs[key][:16], rtol=0, atol=0)
    # P's weight rows and bias, per AdaIN layer: the student's are the teacher's first channels.
    for part in ("parametrizations.weight.original", "bias"):
        rows_t, rows_s = theirs[f"projection.{part}"], ours[f"projection.{part}"]
        layers_t = _psi_by_layer(models.generator, rows_t.reshape(len(rows_t), -1).T)
        layers_s = _psi_by_layer(student, rows_s.reshape(len(rows_s), -1).T)
        assert set(layers_s) <= set(layers_t) and "output_norm" in layers_s
        for name, (scales, shifts) in layers_s.items():
            c = scales.shape[1]
            torch.testing.assert_close(scales, layers_t[name][0][:, :c], rtol=0, atol=0)
            torch.testing.assert_close(shifts, layers_t[name][1][:, :c], rtol=0, atol=0)


def test_distilling_brings_the_student_to_the_teacher_resumes_and_writes_a_bundle(
    teacher, dataset, tmp_path
):
    student = _student(**NARROW)
    models, start = _models(teacher, student)
    batch = _batch(dataset, k=2)

    def loss_of(generator) -> float:
        with torch.no_grad():
            return distillation._loss(
                generator, models.generator.eval(), models.embedder, batch, 2
            ).item()

    before = loss_of(start)
    run, out = tmp_path / "run", tmp_path / "student.safetensors"
    options = DistillOptions(steps=20, batch_size=4, max_shots=2, lr=3e-3, checkpoint_every=10)
    lines: list[str] = []
    assert distill(
        teacher,
        student,
        dataset,
        run,
        out,
        dataclasses.replace(options, steps=10),
        False,
        lines.append,
    )
    assert distill(teacher, student, dataset, run, out, options, False, lines.append) == out
    assert any("resuming" in line and "step 10" in line for line in lines)
    info = read_info(out)
    assert info.extra["step"] == 20
    assert info.model_config.warp_generator.decoder_channels == (16, 8, 4)
    head = TalkingHead.from_checkpoint(out, device="cpu", precision="fp32")
    after = loss_of(head.generator)
    assert after < 0.75 * before, (before, after)
    # E and D are the teacher's, untouched.
    stored, theirs = read_state_dict(out), read_state_dict(teacher)
    for key, value in theirs.items():
        if key.startswith(("embedder.", "discriminator.")):
            torch.testing.assert_close(stored[key], value, rtol=0, atol=0)


def test_a_student_that_changes_more_than_the_decoder_is_refused(teacher, dataset, tmp_path):
    with pytest.raises(UserError, match="feature_channels"):
        distill(
            teacher,
            _student(feature_channels=(4, 8)),
            dataset,
            tmp_path,
            tmp_path / "s",
            DistillOptions(steps=1),
            False,
        )


def test_the_cli_names_a_missing_teacher_in_one_line(tmp_path, dataset):
    preset = tmp_path / "student.yaml"
    preset.write_text(yaml.safe_dump(to_dict(_student(**NARROW))))
    missing = tmp_path / "nope.safetensors"
    result = subprocess.run(
        [
            *CLI,
            "distill",
            str(missing),
            "--data",
            str(dataset),
            "--run",
            str(tmp_path / "r"),
            "--out",
            str(tmp_path / "o.safetensors"),
            "--preset",
            str(preset),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
