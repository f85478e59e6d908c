"""Face crops for personalisation and driving: the same detection and crop geometry as prep."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.config.prep import PrepConfig
from talkinghead.data.tracks import crop_image
from talkinghead.errors import UserError
from talkinghead.landmarks import detect, geometry


@dataclass(frozen=True)
class FaceCrop:
    """A square face crop of a photo and where it came from (for paste-back)."""

    image: np.ndarray  # [S,S,3] uint8
    landmarks: np.ndarray  # [68,2] float64, crop pixels
    box: np.ndarray  # (x0, y0, x1, y1) square box in the photo
    num_faces: int  # faces found in the photo (the largest was used)


def crop_face(photo: np.ndarray, size: int, config: PrepConfig, name: str = "image") -> FaceCrop:
    """Detect the largest face of an RGB photo and crop it as ``prep`` would (one frame)."""
    faces = detect.detect_faces(photo, config.detector, config.upsample)
    if not faces:
        raise UserError(f"{name}: no face found")
    landmarks = detect.predict_landmarks(photo, faces[0].box)
    box = geometry.square_box(geometry.landmark_box(landmarks), config.crop_margin)
    transform = geometry.crop_transform(box, size)
    return FaceCrop(crop_image(photo, box, size), transform.apply(landmarks), box, len(faces))
