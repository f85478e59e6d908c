"""Face detection and 68-point landmarks with dlib (HOG or MMOD detector).

The dlib 68-point model was trained on iBUG 300-W, whose licence excludes commercial use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from talkinghead import assets

# dlib's HOG detector finds faces down to about 80 px: small frames are upsampled (once below
# 400 px, twice below 160 px, e.g. 64-128 px face crops).
_SMALL_FRAME, _TINY_FRAME = 400, 160
# The smallest face each detector finds without upsampling (its sliding window's side).
_WINDOW = {"hog": 80, "mmod": 40}


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (x0, y0, x1, y1) detector box in pixels
    score: float  # detector confidence (HOG: SVM margin; MMOD: CNN score)


@functools.cache
def _hog() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@functools.cache
def _mmod() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(assets.mmod_detector_path()))


@functools.cache
def _predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(assets.landmark_model_path()))


def auto_upsample(image: np.ndarray) -> int:
    """Detector upsampling for an image: 2 for crops, 1 for small frames (176x144), else 0."""
    side = max(image.shape[:2])
    return 2 if side < _TINY_FRAME else 1 if side < _SMALL_FRAME else 0


def detect_faces(
    image: np.ndarray, detector: str = "hog", upsample: int = -1, min_face: int = 0
) -> list[Face]:
    """Faces in an RGB uint8 image [H,W,3], largest first.

    ``upsample`` < 0 chooses automatically (see :func:`auto_upsample`). ``min_face`` > 0: find
    faces down to ``min_face`` px, in the image enlarged so that they fill the detector's window
    when they would not otherwise (faces of 32 px in a 1280 px group photo: ~3 s, 6x a plain
    pass). For photos: video frames keep the fast pass.
    """
    if detector not in _WINDOW:
        raise ValueError(f"unknown detector {detector!r} (hog or mmod)")
    image = np.ascontiguousarray(image)
    upsample = auto_upsample(image) if upsample < 0 else upsample
    smallest = _WINDOW[detector] / 2**upsample  # the smallest face a plain pass finds
    if min_face <= 0 or smallest <= min_face:
        return _run_detector(image, detector, upsample)
    # A fractional enlargement costs (2.5x)^2 the pixels, where dlib's own upsampling (2x per
    # step) would need two steps, 16x: 2.7 s instead of 6.9 s on the Solvay group photo.
    scale = smallest / min_face
    height, width = image.shape[:2]
    size = (round(width * scale), round(height * scale))
    enlarged = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return [Face(f.box / scale, f.score) for f in _run_detector(enlarged, detector, upsample)]


def detect_near(image: np.ndarray, landmarks: np.ndarray, detector: str = "hog") -> list[Face]:
    """Faces near the last known landmarks [68,2]: the detector on a window twice the face's
    size around it, scaled so that the face is 1.5x the detector's smallest, largest first.

    Re-detecting a tracked face this way costs the same whatever the frame size: ~6x less than
    :func:`detect_faces` on a 768x480 frame, ~2x less on a 176x144 one (bench/landmarks.py).
    Empty when the face has moved out of the window: search the whole frame then.
    """
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    centre, side = (lo + hi) / 2, max(float((hi - lo).max()), 1.0)
    height, width = image.shape[:2]
    x0, y0 = (max(0, int(c - side)) for c in centre)
    x1, y1 = min(width, int(centre[0] + side) + 1), min(height, int(centre[1] + side) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return []
    scale = 1.5 * _WINDOW[detector] / side
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    window = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).resize(
        size, Image.Resampling.BILINEAR
    )
    offset = np.array([x0, y0, x0, y0], np.float64)
    return [
        Face(f.box / scale + offset, f.score)
        for f in _run_detector(np.asarray(window), detector, 0)
    ]


def _run_detector(image: np.ndarray, detector: str, upsample: int) -> list[Face]:
    if detector == "hog":
        rects, scores, _ = _hog().run(image, upsample, 0.0)
        faces = [Face(_rect_box(r), float(s)) for r, s in zip(rects, scores)]
    else:
        faces = [Face(_rect_box(d.rect), float(d.confidence)) for d in _mmod()(image, upsample)]
    return sorted(faces, key=lambda f: -float(np.prod(f.box[2:] - f.box[:2])))


def _rect_box(rect: dlib.rectangle) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64)


def predict_landmarks(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """68 iBUG landmarks [68,2] (x, y) of the face inside ``box`` (a detector or tracked box)."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    shape = _predictor()(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def tracking_box(landmarks: np.ndarray) -> np.ndarray:
    """A detector-like box from the previous frame's landmarks, used to track between detections.

    dlib's HOG boxes cover roughly brows to chin; the landmark box (jaw to brows) is close to
    it, so the predictor sees a familiar framing.
    """
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    centre, side = (lo + hi) / 2, float((hi - lo).max())
    return np.concatenate([centre - side / 2, centre + side / 2])
