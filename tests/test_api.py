"""The Python API: the README's example as written, frames in and out, marks as the CLI's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import talkinghead
from talkinghead import assets, video
from talkinghead.api import finetune_steps_value
from talkinghead.errors import UserError
from talkinghead.provenance import UNMARKED_WARNING, MarkingOptions, detect_frames, verify_file
from talkinghead.training import fine_tuning

README = Path(__file__).resolve().parents[1] / "README.md"
NUM_FRAMES = 12


def _readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.+?)\n```", README.read_text(), re.DOTALL)
    [example] = [b for b in blocks if "TalkingHead.from_pretrained(" in b]
    return example


@pytest.fixture(scope="module")
def driver(tmp_path_factory, clip_frames) -> Path:
    path = tmp_path_factory.mktemp("driver") / "driver.mp4"
    with video.VideoWriter(path, 25) as writer:
        for frame in clip_frames[:NUM_FRAMES]:
            writer.write(frame)
    return path


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, driver, capsys):
    code = _readme_python_example()
    # Its inputs, under the names it uses; fine-tuning cut to 2 steps to keep the test short.
    shutil.copy(assets.astronaut_path(), tmp_path / "me.jpg")
    shutil.copy(driver, tmp_path / "talking.mp4")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fine_tuning, "default_steps", lambda num_shots: 2)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert f"({NUM_FRAMES}, 128, 128, 3)" in capsys.readouterr().out
    assert namespace["person"].info["finetune_steps"] == 2  # None: the automatic count
    report = verify_file(tmp_path / "me_talking.mp4")
    assert report.marked and report.manifest.signature_ok and report.watermark.marked


def test_import_is_light_and_talkinghead_loads_on_use():
    code = (
        "import sys, talkinghead; assert 'torch' not in sys.modules; "
        "from talkinghead import TalkingHead; assert 'torch' in sys.modules; "
        "print(TalkingHead.__name__, 'TalkingHead' in dir(talkinghead))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["TalkingHead", "True"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        talkinghead.Nothing  # noqa: B018


def test_frames_in_frames_out_are_watermarked_and_save_marked(head, person, clip_frames, tmp_path):
    result = head.animate_video(person, clip_frames[:NUM_FRAMES], fps=25)
    assert result.frames.shape == (NUM_FRAMES, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.fps == 25 and result.audio_from is None
    assert detect_frames(list(result.frames), fps=25).marked  # the watermark, before any file
    note = result.save(tmp_path / "out.mp4")
    assert "C2PA manifest" in note
    report = verify_file(tmp_path / "out.mp4")
    assert report.marked and report.tags["motion_mode"] == "relative"
    assert len(list(video.read_frames(tmp_path / "out.mp4"))) == NUM_FRAMES


def test_a_driver_file_gives_its_frame_rate(head, person, driver):
    result = head.animate_video(person, str(driver))
    assert len(result) == NUM_FRAMES and result.fps == 25


def test_unmarked_output_says_so(head, person, clip_frames, tmp_path, capsys):
    result = head.animate_video(
        person, clip_frames[:4], fps=25, marking=MarkingOptions(enabled=False)
    )
    assert UNMARKED_WARNING in capsys.readouterr().err
    assert result.save(tmp_path / "plain.mp4") == UNMARKED_WARNING
    assert not verify_file(tmp_path / "plain.mp4").marked


def test_bad_drivers_are_one_line_errors(head, person, tmp_path):
    with pytest.raises(UserError, match=r"missing\.mp4"):
        head.animate_video(person, tmp_path / "missing.mp4")
    with pytest.raises(UserError, match=r"\[T,H,W,3\]"):
        head.animate_video(person, np.zeros((64, 64, 3), np.uint8))


def test_from_pretrained_and_to(bundle):
    head = talkinghead.TalkingHead.from_pretrained(bundle, device="cpu", precision="fp32")
    assert head.to("cpu") is head and head.device.type == "cpu" and head.precision == "fp32"
    assert next(head.generator.parameters()).device.type == "cpu"
    with pytest.raises(UserError, match="fp16"):
        head.to("cpu", precision="fp16")


@pytest.mark.parametrize(
    ("value", "steps"), [("auto", None), (None, None), ("AUTO", None), ("0", 0), (40, 40)]
)
def test_finetune_steps_values(value, steps):
    assert finetune_steps_value(value) == steps


@pytest.mark.parametrize("value", ["-1", "many", 2.5, "1e3"])
def test_finetune_steps_refuses_other_values(value):
    with pytest.raises(UserError, match="auto or"):
        finetune_steps_value(value)


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--source", "me.jpg", "--out", "me.safetensors"],
        ["animate", "--source", "me.jpg", "--driver", "d.mp4", "--out", "o.mp4"],
        ["eval"],
        ["demo"],
        ["web"],
    ],
)
def test_cli_names_fine_tuning_the_same_everywhere_and_defaults_to_auto(command):
    from talkinghead.cli import build_parser

    parser, _ = build_parser()
    assert parser.parse_args(command).finetune_steps is None  # auto
    assert parser.parse_args([*command, "--finetune-steps", "auto"]).finetune_steps is None
    assert parser.parse_args([*command, "--finetune-steps", "0"]).finetune_steps == 0


def test_cli_held_out_and_prep_workers():
    from talkinghead.cli import build_parser

    parser, _ = build_parser()
    assert parser.parse_args(["eval", "--held-out", "5"]).held_out == 5
    assert parser.parse_args(["eval"]).held_out == 32
    assert parser.parse_args(["prep"]).workers == len(os.sched_getaffinity(0))
