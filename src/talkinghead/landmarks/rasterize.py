"""Landmark images as in the paper: 68 iBUG points drawn as coloured polylines on black.

One colour per facial part; closed contours for eyes and lips; line thickness 2 at 256 px,
scaled with the image size. Drawing uses PIL without anti-aliasing, so the same landmarks always
give the same bytes and every drawn pixel carries exactly its part's colour.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw


class FacePart(NamedTuple):
    name: str
    indices: range
    closed: bool
    colour: tuple[int, int, int]


# The paper's partition of the 68 iBUG points into coloured parts; colours are ours, distinct.
FACE_PARTS: tuple[FacePart, ...] = (
    FacePart("jaw", range(0, 17), False, (255, 255, 255)),
    FacePart("right_brow", range(17, 22), False, (255, 0, 0)),
    FacePart("left_brow", range(22, 27), False, (0, 255, 0)),
    FacePart("nose_bridge", range(27, 31), False, (0, 0, 255)),
    FacePart("nostrils", range(31, 36), False, (255, 255, 0)),
    FacePart("right_eye", range(36, 42), True, (255, 0, 255)),
    FacePart("left_eye", range(42, 48), True, (0, 255, 255)),
    FacePart("outer_lips", range(48, 60), True, (255, 128, 0)),
    FacePart("inner_lips", range(60, 68), True, (128, 0, 255)),
)


def line_thickness(size: int) -> int:
    """Line width in pixels for an image ``size`` pixels tall: 2 at 256 (the paper)."""
    return max(1, round(2 * size / 256))


def draw_landmarks(landmarks: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Render landmarks [68,2] (x, y pixels) into an RGB uint8 image [H,W,3] on black.

    ``size`` is the side of a square image or ``(height, width)``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"expected landmarks of shape (68, 2), got {landmarks.shape}")
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    thickness = line_thickness(height)
    for part in FACE_PARTS:
        points = [tuple(p) for p in landmarks[part.indices].round(2).tolist()]
        if part.closed:
            points.append(points[0])
        draw.line(
            points, fill=part.colour, width=thickness, joint="curve" if thickness > 2 else None
        )
    return np.asarray(image)


def draw_landmarks_batch(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Render [N,68,2] landmarks into [N,size,size,3] uint8 images."""
    return np.stack([draw_landmarks(points, size) for points in landmarks])
