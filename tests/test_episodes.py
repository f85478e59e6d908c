"""Episodes for meta-learning: shapes, values, determinism, flips and rank splitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.config.prep import PrepConfig
from talkinghead.data.episodes import EpisodeDataset, to_tensor, to_uint8
from talkinghead.data.preprocess import run_prep
from talkinghead.data.sampling import StepBatchSampler
from talkinghead.landmarks.rasterize import FACE_PARTS


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory, short_videos):
    root = tmp_path_factory.mktemp("episodes")
    run_prep([short_videos], root, PrepConfig(crop_size=64, min_track_frames=8), progress=False)
    return root


def test_episode_shapes_values_and_determinism(dataset_root):
    data = EpisodeDataset(dataset_root, num_shots=4, image_size=32, seed=3)
    assert len(data) == data.num_videos == 6
    episode = data[(2, 17)]
    assert episode.source_frames.shape == (4, 3, 32, 32)
    assert episode.source_landmarks.shape == (4, 3, 32, 32)
    assert episode.target_frame.shape == episode.target_landmarks.shape == (3, 32, 32)
    assert episode.video_index.item() == 2
    for tensor in episode[:4]:
        assert tensor.min() >= -1 and tensor.max() <= 1
    assert episode.source_landmarks.min() == -1  # black canvas
    again = data[(2, 17)]
    assert all(torch.equal(a, b) for a, b in zip(episode, again))
    other = data[(2, 18)]
    assert not torch.equal(episode.target_frame, other.target_frame)


def test_flip_flips_image_and_landmarks_together(dataset_root):
    plain = EpisodeDataset(dataset_root, num_shots=2, flip_probability=0.0, seed=1)
    flipped = EpisodeDataset(dataset_root, num_shots=2, flip_probability=1.0, seed=1)
    a, b = plain[(0, 5)], flipped[(0, 5)]
    torch.testing.assert_close(b.target_frame, a.target_frame.flip(-1))
    # The right eye's colour stays on the image's left half after flipping (a mirrored left eye).
    colour = torch.tensor(FACE_PARTS[5].colour) / 127.5 - 1
    for landmarks in (a.target_landmarks, b.target_landmarks):
        mask = (landmarks - colour[:, None, None]).abs().sum(0) < 1e-3
        xs = mask.nonzero()[:, 1].float()
        assert xs.numel() > 0 and xs.mean() < landmarks.shape[-1] / 2


def test_step_sampler_splits_the_global_batch_across_ranks():
    single = StepBatchSampler(num_videos=5, batch_size=4, world_size=1, seed=7)
    ranks = [StepBatchSampler(5, 2, rank=r, world_size=2, seed=7) for r in range(2)]
    for step in range(4):
        assert single.batch(step) == ranks[0].batch(step) + ranks[1].batch(step)
    # Every video appears once per pass over the stream, and resuming at a step continues it.
    first_pass = [single.draw(n)[0] for n in range(5)]
    assert sorted(first_pass) == list(range(5))
    resumed = StepBatchSampler(5, 4, seed=7, start_step=3)
    assert next(iter(resumed)) == single.batch(3)


def test_tensor_conversions_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(to_uint8(tensor), image)
