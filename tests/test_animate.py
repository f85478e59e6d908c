"""Personalisation, fine-tuning and animation on real media with a tiny model bundle."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from talkinghead import assets, video
from talkinghead.inference import jobs
from talkinghead.inference.compose import face_mask, paste_back
from talkinghead.inference.person import Person
from talkinghead.inference.render import AnimateOptions
from talkinghead.training.fine_tuning import FineTuneConfig, default_steps, finetune

CLI = [sys.executable, "-m", "talkinghead.cli"]


def test_personalise_from_photo_and_clip_frames(head, astronaut, clip_frames, person):
    assert person.psi.shape == (head.generator.psi_dim,)
    assert person.shots.shape == (1, 64, 64, 3) and person.info["finetune_steps"] == 0
    several = head.personalize([clip_frames[0], clip_frames[40], clip_frames[80]], 0, False)
    assert several.shots.shape[0] == 3
    # The mean embedding of several shots is what psi is projected from.
    with torch.no_grad():
        expected = head.generator.project(
            head.embed(head.crop(list(clip_frames[[0, 40, 80]])))[None]
        )
    torch.testing.assert_close(several.psi, expected[0])


def test_finetuning_lowers_the_content_loss_on_the_shots(head, clip_frames):
    crops = head.crop([clip_frames[i] for i in (0, 30, 60, 90)])
    shots = head._shot_tensors(crops)
    config = FineTuneConfig(steps=60, lr_generator=1e-3, patience=1000)
    result = finetune(
        head.generator,
        head.discriminator,
        head.content_loss,
        head.preset.loss,
        shots,
        head.embed(crops),
        config,
        progress=False,
    )
    assert result.steps == 60
    losses = result.content_losses
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert default_steps(1) == 125 and default_steps(30) == 230 and default_steps(64) == 230


def test_person_file_round_trip(head, clip_frames, tmp_path):
    person = head.personalize([clip_frames[0], clip_frames[50]], finetune_steps=2, progress=False)
    person.save(tmp_path / "p.safetensors")
    loaded = Person.load(tmp_path / "p.safetensors", head.model_hash)
    torch.testing.assert_close(loaded.psi, person.psi)
    np.testing.assert_array_equal(loaded.shots, person.shots)
    assert loaded.info == person.info and loaded.generator_state is not None
    driver = person.shot_landmarks[[0, 1]]
    a = head.render(person, driver)
    b = head.render(loaded, driver)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # G' stored in float16
    with pytest.raises(Exception, match="made with another model"):
        Person.load(tmp_path / "p.safetensors", "0" * 64)
    (tmp_path / "bad.safetensors").write_bytes(b"not a person")
    with pytest.raises(Exception, match="not a readable person file"):
        Person.load(tmp_path / "bad.safetensors")


def test_relative_motion_maps_first_driver_frame_to_the_source(head, person, clip_frames):
    driver = np.stack([head.crop([f])[0].landmarks for f in clip_frames[[0, 20]]])
    targets = head.target_landmarks(person, driver, driver[0], "relative")
    np.testing.assert_allclose(targets[0], person.reference_landmarks, atol=1e-9)
    assert not np.allclose(targets[1], person.reference_landmarks)
    absolute = head.target_landmarks(person, driver, driver[0], "absolute")
    assert not np.allclose(absolute[0], person.reference_landmarks)  # driver's own face shape


def test_paste_back_keeps_source_pixels_outside_the_mask(person):
    face = np.full((64, 64, 3), 7, np.uint8)
    landmarks = person.reference_landmarks
    pasted = paste_back(person.photo, face, person.photo_box, landmarks)
    assert pasted.shape == person.photo.shape
    changed = np.any(pasted != person.photo, axis=-1)
    assert changed.any()
    x0, y0, x1, y1 = person.photo_box
    ys, xs = np.nonzero(changed)
    assert xs.min() >= np.floor(x0) and xs.max() <= np.ceil(x1)
    assert ys.min() >= np.floor(y0) and ys.max() <= np.ceil(y1)
    mask = face_mask(landmarks, 64)
    assert mask[0, 0] == 0 and mask[32, 32] > 0.9  # corners untouched, face centre replaced


def _driver_with_audio(path: Path, frames: np.ndarray, fps: Fraction) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        seconds = len(frames) / float(fps)
        t = np.arange(int(16000 * seconds)) / 16000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                tone[:, start : start + 1024], format="fltp", layout="mono"
            )
            chunk.sample_rate = 16000
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)


def test_animate_matches_driver_frames_fps_and_keeps_audio(head, person, clip_frames, tmp_path):
    driver = tmp_path / "driver.mp4"
    _driver_with_audio(driver, clip_frames[:30], Fraction(30000, 1001))
    out = tmp_path / "out.mp4"
    options = AnimateOptions(side_by_side=True, batch_size=4)
    report = jobs.animate_file(head, person, driver, out, options, tmp_path / "png", progress=False)
    info = video.probe(out)
    assert report.frames == 30 and len(list(video.read_frames(out))) == 30
    assert abs(info.fps - 30000 / 1001) < 1e-3 and info.has_audio
    assert info.height == 64 and info.width > 64 * 2  # driver | landmarks | result
    assert len(list((tmp_path / "png").glob("frame-*.png"))) == 30


def test_animate_full_clip_without_audio(head, person, clip_path, tmp_path):
    out = tmp_path / "clip.mp4"
    report = jobs.animate_file(
        head, person, clip_path, out, AnimateOptions(paste_back=True), progress=False
    )
    info = video.probe(out)
    assert report.frames == 120 and not info.has_audio
    assert (info.width, info.height) == (512, 512)  # pasted into the astronaut photo


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_cli_bad_inputs_exit_2_with_one_line_and_no_output(bundle, clip_path, tmp_path):
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(blank)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out.mp4"
    photo = str(assets.astronaut_path())
    cases = {
        "no face": ["--source", str(blank), "--driver", str(clip_path)],
        "corrupt driver": ["--source", photo, "--driver", str(broken)],
        "bad person": ["--person", str(broken), "--driver", str(clip_path)],
    }
    for name, args in cases.items():
        result = _cli("animate", "--model", str(bundle), *args, "--out", str(out), "--no-progress")
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (name, result.stderr)
        assert not out.exists() and not list(tmp_path.glob(".out.mp4*")), name
    assert (
        "no face"
        in _cli("animate", "--model", str(bundle), *cases["no face"], "--out", str(out)).stderr
    )


def test_driver_face_lost_is_bridged_then_reported(head, person, clip_frames, tmp_path):
    frames = clip_frames[:40].copy()
    frames[10:13] = 0  # a short loss: held
    short = tmp_path / "short_gap.mp4"
    with video.VideoWriter(short, 25) as writer:
        for frame in frames:
            writer.write(frame)
    report = jobs.animate_file(head, person, short, tmp_path / "a.mp4", progress=False)
    assert report.frames == 40 and report.times.held_frames >= 3
    frames[10:35] = 0  # a long loss: a clear error, and no output file
    long = tmp_path / "long_gap.mp4"
    with video.VideoWriter(long, 25) as writer:
        for frame in frames:
            writer.write(frame)
    with pytest.raises(Exception, match="face lost for more than 15 frames"):
        jobs.animate_file(head, person, long, tmp_path / "b.mp4", progress=False)
    assert not (tmp_path / "b.mp4").exists()
