"""Pure geometry on 68-point landmarks: boxes, square crops, crop/uncrop transforms, smoothing.

Boxes are ``(x0, y0, x1, y1)`` float arrays in pixels; landmarks are ``[68, 2]`` (x, y) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """Tight box ``(x0, y0, x1, y1)`` around landmarks ``[..., 68, 2]``."""
    return np.concatenate([landmarks.min(axis=-2), landmarks.max(axis=-2)], axis=-1)


def square_box(box: np.ndarray, margin: float) -> np.ndarray:
    """A square box centred on ``box`` whose side is the longer side times ``1 + margin``."""
    box = np.asarray(box, dtype=np.float64)
    centre = (box[..., :2] + box[..., 2:]) / 2
    side = (box[..., 2:] - box[..., :2]).max(axis=-1, keepdims=True) * (1 + margin)
    return np.concatenate([centre - side / 2, centre + side / 2], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes."""
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]))
    return inter / max(area - inter, 1e-9)


def union_box(boxes: np.ndarray) -> np.ndarray:
    """Smallest box containing all ``boxes`` [N,4]."""
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


@dataclass(frozen=True)
class CropTransform:
    """Maps full-image pixel coordinates into a ``size`` x ``size`` crop of ``box`` and back."""

    box: tuple[float, float, float, float]
    size: int

    @property
    def scale(self) -> float:
        return self.size / (self.box[2] - self.box[0])

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates -> crop coordinates."""
        return (np.asarray(points, dtype=np.float64) - np.array(self.box[:2])) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates -> image coordinates."""
        return np.asarray(points, dtype=np.float64) / self.scale + np.array(self.box[:2])


def crop_transform(box: np.ndarray, size: int) -> CropTransform:
    """The transform of a square ``box`` resampled to ``size`` pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if abs((x1 - x0) - (y1 - y0)) > 1e-6 * max(x1 - x0, 1.0):
        raise ValueError(f"crop box {box} is not square")
    return CropTransform((x0, y0, x1, y1), size)


def smooth_sequence(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0; edges average over the frames that exist.

    Used on per-frame boxes [T,4] and landmarks [T,68,2] to remove detector jitter. ``window``
    <= 1 returns the input unchanged.
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) < 2:
        return values.copy()
    half = window // 2
    flat = values.reshape(len(values), -1)
    padded = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(flat, axis=0)])
    index = np.arange(len(values))
    lo, hi = np.clip(index - half, 0, len(values)), np.clip(index + half + 1, 0, len(values))
    smoothed = (padded[hi] - padded[lo]) / (hi - lo)[:, None]
    return smoothed.reshape(values.shape)


def flip_landmarks(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks [..., 68, 2] horizontally in an image ``width`` wide, relabelling points.

    A mirrored left eye becomes the right eye, so point indices are permuted (iBUG layout) to
    keep each facial part's meaning, and its colour in the landmark image, consistent.
    """
    mirrored = np.asarray(landmarks, dtype=np.float64).copy()
    mirrored[..., 0] = width - 1 - mirrored[..., 0]
    return mirrored[..., IBUG_FLIP_PERMUTATION, :]


def _flip_permutation() -> np.ndarray:
    jaw = list(range(16, -1, -1))
    brows = list(range(26, 21, -1)) + list(range(21, 16, -1))
    nose_bridge = [27, 28, 29, 30]
    nostrils = [35, 34, 33, 32, 31]
    # Eyes: right eye 36..41 <-> left eye 42..47, walking each contour from its outer corner.
    right_eye = [45, 44, 43, 42, 47, 46]
    left_eye = [39, 38, 37, 36, 41, 40]
    outer_lips = [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    inner_lips = [64, 63, 62, 61, 60, 67, 66, 65]
    return np.array(
        jaw + brows + nose_bridge + nostrils + right_eye + left_eye + outer_lips + inner_lips
    )


IBUG_FLIP_PERMUTATION = _flip_permutation()
