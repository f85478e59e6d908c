"""Relative motion, piecewise-affine warping, and the offline corpus built from them."""

from __future__ import annotations

import numpy as np

from talkinghead import assets, video
from talkinghead.config.prep import PrepConfig
from talkinghead.data import store
from talkinghead.data.corpus import build_corpus
from talkinghead.data.preprocess import run_prep
from talkinghead.landmarks import motion, warp


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    points = rng.random((68, 2)) * 100
    matrix = 1.7 * _rotation(0.3)
    target = points @ matrix.T + np.array([5.0, -3.0])
    fitted, offset = motion.similarity_fit(points, target)
    np.testing.assert_allclose(fitted, matrix, atol=1e-9)
    np.testing.assert_allclose(offset, [5.0, -3.0], atol=1e-9)


def test_relative_motion_maps_reference_to_source_and_scales_changes():
    rng = np.random.default_rng(1)
    reference = rng.random((68, 2)) * 50
    source = reference @ (2.0 * np.eye(2)).T + 30  # the source face is twice as large
    driver = np.stack([reference, reference + np.array([1.0, 0.0])])
    result = motion.retarget_relative(source, driver, reference)
    np.testing.assert_allclose(result[0], source)  # exactly the source's own landmarks
    np.testing.assert_allclose(result[1] - source, np.tile([2.0, 0.0], (68, 1)), atol=1e-9)


def test_piecewise_affine_warp_identity_and_translation():
    rng = np.random.default_rng(2)
    image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    points = rng.random((20, 2)) * [40, 30] + [12, 9]
    np.testing.assert_array_equal(warp.piecewise_affine_warp(image, points, points), image)
    # A dot inside the point cloud follows the points when they all move by (3, 2).
    dot = np.zeros((48, 64, 1), np.uint8)
    centre = np.round(points.mean(0)).astype(int)
    dot[centre[1], centre[0]] = 255
    moved = warp.piecewise_affine_warp(dot, points, points + np.array([3.0, 2.0]))
    peak = np.unravel_index(moved[..., 0].argmax(), moved.shape[:2])
    assert (peak[1], peak[0]) == (centre[0] + 3, centre[1] + 2)


def test_corpus_is_a_prep_source_with_one_identity_per_video(tmp_path):
    summary = build_corpus(
        [assets.astronaut_path()],
        assets.sample_clip_path(),
        tmp_path / "corpus",
        size=96,
        progress=False,
    )
    names = sorted(p.name for p in summary.videos)
    assert names == ["astronaut.mp4", "astronaut_mirror.mp4", "carphone_pristine.mp4"]
    frames = np.stack(list(video.read_frames(summary.videos[0])))
    assert frames.shape[0] >= 100 and frames.shape[1:] == (96, 96, 3)
    assert frames.std(axis=0).mean() > 1.0  # the face moves
    # Warped photos are labelled synthetic in the container (the real clip's part is not).
    assert video.read_tags(summary.videos[0])["comment"].startswith("SYNTHETIC: training corpus")
    assert "comment" not in video.read_tags(summary.videos[2])
    prepped = run_prep(
        [tmp_path / "corpus"], tmp_path / "data", PrepConfig(crop_size=64), progress=False
    )
    assert prepped.num_skipped == 0
    videos = {e.video for e in store.load_manifest(tmp_path / "data")}
    assert len(videos) == 3
