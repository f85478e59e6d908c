"""Training runs that survive preemption: ``--resume auto`` and the last N checkpoints kept."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from talkinghead import cli
from talkinghead.checkpoint import (
    latest_run_checkpoint,
    load_training_state,
    run_checkpoints,
    save_run_checkpoint,
)
from talkinghead.config.prep import PrepConfig
from talkinghead.data.preprocess import run_prep
from talkinghead.errors import UserError
from talkinghead.training.export import export_bundle
from talkinghead.training.loop import train

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import fast_preset, write_preset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, short_videos) -> Path:
    root = tmp_path_factory.mktemp("resume_data")
    run_prep([short_videos], root, PrepConfig(crop_size=64, min_track_frames=8), progress=False)
    return root


def _train(dataset, run: Path, max_steps: int, resume, **options):
    messages: list[str] = []
    preset = fast_preset(max_steps=max_steps, checkpoint_every=1)
    result = train(preset, dataset, run, resume, progress=False, log=messages.append, **options)
    return result, "\n".join(messages)


def _logged_steps(run: Path) -> list[int]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_resume_auto_starts_an_empty_run_then_continues_it(dataset, tmp_path):
    run = tmp_path / "run"
    first, said = _train(dataset, run, 2, "auto")
    assert first.step == 2 and "step 0 -> 2" in said
    second, said = _train(dataset, run, 4, "auto")
    assert second.step == 4 and "step 2 -> 4" in said  # continued, not restarted
    assert _logged_steps(run) == [1, 2, 3, 4]
    assert load_training_state(run / "checkpoint.pt")["step"] == 4
    finished, _ = _train(dataset, run, 4, "auto")  # a start after the end: nothing to do
    assert finished.step == 4 and _logged_steps(run) == [1, 2, 3, 4]


def test_resume_modes_refuse_what_they_cannot_do(dataset, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        _train(dataset, tmp_path / "empty", 1, True)
    _train(dataset, tmp_path / "run", 1, False)
    with pytest.raises(UserError, match="holds a run already; pass --resume"):
        _train(dataset, tmp_path / "run", 2, False)


def test_keeps_the_last_n_checkpoints_named_by_step(dataset, tmp_path):
    run = tmp_path / "run"
    result, _ = _train(dataset, run, 5, "auto", keep_checkpoints=2)
    assert [p.name for p in run_checkpoints(run)] == [
        "checkpoint-000000004.pt",
        "checkpoint-000000005.pt",
    ]
    assert result.checkpoint == run / "checkpoint.pt"
    assert (run / "checkpoint.pt").resolve() == run / "checkpoint-000000005.pt"
    assert not list(run.glob(".*tmp"))  # no temporary file left behind
    # `export` still reads RUN/checkpoint.pt: the latest one.
    bundle = export_bundle(run, tmp_path / "bundle.safetensors")
    assert bundle.is_file()


def test_the_cli_resumes_auto_and_keeps_n(dataset, tmp_path):
    preset = write_preset(tmp_path / "fast.yaml", max_steps=3, checkpoint_every=1)
    run = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--run", str(run), "--preset", str(preset)]
    args += ["--resume", "auto", "--keep-checkpoints", "1", "--device", "cpu", "--no-progress"]
    assert cli.main(args) == 0
    assert cli.main([*args, "--steps", "4"]) == 0  # a requeued job: the same command, continued
    assert [p.name for p in run_checkpoints(run)] == ["checkpoint-000000004.pt"]
    assert _logged_steps(run) == [1, 2, 3, 4]


def test_latest_checkpoint_falls_back_to_the_newest_numbered_one(tmp_path):
    assert latest_run_checkpoint(tmp_path) is None
    for step in (1, 10, 2):
        save_run_checkpoint(tmp_path, {"step": step}, keep=5)
    assert latest_run_checkpoint(tmp_path).resolve() == tmp_path / "checkpoint-000000002.pt"
    os.unlink(tmp_path / "checkpoint.pt")  # e.g. a copy of the run folder that lost the link
    assert latest_run_checkpoint(tmp_path) == tmp_path / "checkpoint-000000010.pt"
