"""Landmarks on real faces, rasterisation, and the crop geometry everything else relies on."""

from __future__ import annotations

import dlib
import numpy as np
import pytest

from talkinghead import assets
from talkinghead.data.tracks import crop_image
from talkinghead.landmarks import detect, geometry, rasterize


def test_landmarks_found_on_most_clip_frames(clip_frames):
    found = sum(bool(detect.detect_faces(frame)) for frame in clip_frames)
    assert found / len(clip_frames) >= 0.95


def test_landmarks_match_dlib_on_astronaut(astronaut):
    faces = detect.detect_faces(astronaut)
    assert len(faces) == 1
    ours = detect.predict_landmarks(astronaut, faces[0].box)
    rect = dlib.get_frontal_face_detector()(astronaut, 0)[0]
    shape = dlib.shape_predictor(str(assets.landmark_model_path()))(astronaut, rect)
    reference = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    assert np.abs(ours - reference).max() <= 3.0
    # The face is in the upper middle of the photo: a sanity check on (x, y) order.
    nose_tip = ours[30]
    assert 150 < nose_tip[0] < 300 and 50 < nose_tip[1] < 250


def test_tracking_box_reproduces_landmarks(clip_frames):
    frame = clip_frames[10]
    detected = detect.predict_landmarks(frame, detect.detect_faces(frame)[0].box)
    tracked = detect.predict_landmarks(frame, detect.tracking_box(detected))
    assert np.abs(tracked - detected).mean() < 1.0


def test_detect_near_finds_the_followed_face_where_the_whole_frame_does(clip_frames, astronaut):
    for image in (clip_frames[10], clip_frames[60], astronaut):
        whole = detect.detect_faces(image)[0]
        landmarks = detect.predict_landmarks(image, whole.box)
        near = detect.detect_near(image, landmarks)
        assert near, "the face next to its own landmarks was not found"
        assert geometry.box_iou(near[0].box, whole.box) > 0.6
        again = detect.predict_landmarks(image, near[0].box)
        interocular = np.linalg.norm(landmarks[36] - landmarks[45])
        assert np.linalg.norm(again - landmarks, axis=1).mean() < 0.1 * interocular
    # Far from the face, the window holds none: the caller searches the whole frame.
    assert detect.detect_near(astronaut, landmarks + [-180.0, 250.0]) == []


def _sample_landmarks(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.stack([np.linspace(0.2, 0.8, 68), 0.5 + 0.2 * np.sin(np.arange(68))], 1)
    return (base + rng.normal(0, 0.01, base.shape)) * size


def test_rasterise_is_deterministic_and_black_background():
    landmarks = _sample_landmarks(256)
    first = rasterize.draw_landmarks(landmarks, 256)
    second = rasterize.draw_landmarks(landmarks.copy(), 256)
    assert first.shape == (256, 256, 3) and first.dtype == np.uint8
    assert first.tobytes() == second.tobytes()
    assert (first[0, 0] == 0).all() and (first.sum(-1) == 0).mean() > 0.9


def test_rasterise_colours_per_part(clip_frames):
    frame = clip_frames[0]
    landmarks = detect.predict_landmarks(frame, detect.detect_faces(frame)[0].box)
    scale = 256 / 144
    image = rasterize.draw_landmarks(landmarks * scale, 256)
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    expected = {part.colour for part in rasterize.FACE_PARTS} | {(0, 0, 0)}
    assert colours == expected  # every part drawn, nothing else (no anti-aliasing)
    for part in rasterize.FACE_PARTS:
        # A part's own points carry its colour unless a later part is drawn over them.
        x, y = (landmarks[part.indices.start] * scale).round().astype(int)
        patch = image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
        assert any(tuple(p) == part.colour for p in patch), part.name


def test_line_thickness_scales_with_size():
    assert rasterize.line_thickness(256) == 2
    assert rasterize.line_thickness(512) == 4
    assert rasterize.line_thickness(64) == 1
    thin = (rasterize.draw_landmarks(_sample_landmarks(256), 256).sum(-1) > 0).sum()
    thick = (rasterize.draw_landmarks(_sample_landmarks(512), 512).sum(-1) > 0).sum()
    assert 3 < thick / thin < 5  # twice the length and twice the width


def test_square_box_and_crop_round_trip():
    landmarks = _sample_landmarks(300) + np.array([40.0, 10.0])
    box = geometry.square_box(geometry.landmark_box(landmarks), margin=0.5)
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])
    transform = geometry.crop_transform(box, 128)
    crop_points = transform.apply(landmarks)
    assert crop_points.min() >= 0 and crop_points.max() <= 128
    np.testing.assert_allclose(transform.invert(crop_points), landmarks, atol=1e-9)
    with pytest.raises(ValueError):
        geometry.crop_transform(np.array([0, 0, 10, 20]), 64)


def test_crop_image_agrees_with_transform():
    image = np.zeros((200, 300, 3), np.uint8)
    point = np.array([180.0, 70.0])
    image[70, 180] = 255  # pixel centre (180.5, 70.5) in corner convention
    box = np.array([120.0, 20.0, 220.0, 120.0])  # 100 px square -> 200 px crop (upsampling)
    crop = crop_image(image, box, 200)
    peak = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])[::-1]
    expected = geometry.crop_transform(box, 200).apply(point + 0.5) - 0.5
    assert np.abs(np.array(peak) - expected).max() <= 1.0
    outside = crop_image(image, np.array([-100.0, -100.0, 0.0, 0.0]), 32)
    assert outside.max() == 0  # outside the frame is black


def test_smoothing_keeps_constants_and_reduces_jitter():
    constant = np.ones((10, 68, 2)) * 5
    np.testing.assert_allclose(geometry.smooth_sequence(constant, 5), constant)
    rng = np.random.default_rng(1)
    noisy = rng.normal(0, 1, (200, 4))
    assert geometry.smooth_sequence(noisy, 5).std() < noisy.std() * 0.6
    np.testing.assert_array_equal(geometry.smooth_sequence(noisy, 1), noisy)


def test_flip_landmarks_is_an_involution_and_swaps_eyes(clip_frames):
    frame = clip_frames[0]
    landmarks = detect.predict_landmarks(frame, detect.detect_faces(frame)[0].box)
    width = frame.shape[1]
    flipped = geometry.flip_landmarks(landmarks, width)
    np.testing.assert_allclose(geometry.flip_landmarks(flipped, width), landmarks)
    # After mirroring, the "right eye" points are where the mirrored left eye was,
    # and they still lie left of the "left eye" in the image, as in any upright face.
    np.testing.assert_allclose(flipped[36:42].mean(0)[1], landmarks[42:48].mean(0)[1])
    assert flipped[36:42, 0].mean() < flipped[42:48, 0].mean()
    mirrored = rasterize.draw_landmarks(flipped, (144, width))
    assert {tuple(c) for c in mirrored.reshape(-1, 3)} >= {rasterize.FACE_PARTS[5].colour}
