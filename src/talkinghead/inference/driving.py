"""Driver landmarks, frame by frame, for animation: detect, track, bridge short face losses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from talkinghead.config.prep import PrepConfig
from talkinghead.errors import UserError
from talkinghead.landmarks import detect, geometry


def track_driver(
    frames: Iterable[np.ndarray], config: PrepConfig, max_gap: int = 15, name: str = "driver"
) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Yield ``(frame, landmarks [68,2], held)`` for every frame, in frame pixels.

    The detector runs every ``config.detect_every`` frames and landmarks follow the face in
    between. Where the face is lost, the last good landmarks are held (``held`` is True) for at
    most ``max_gap`` frames; a longer loss, or no face before the first frame, is a UserError.
    """
    previous: np.ndarray | None = None
    since_detect, gap = config.detect_every, 0
    for index, frame in enumerate(frames):
        landmarks = None
        if previous is None or since_detect >= config.detect_every or gap:
            faces = detect.detect_faces(frame, config.detector, config.upsample)
            if faces:
                box = faces[0].box if previous is None else _closest(faces, previous)
                landmarks, since_detect = detect.predict_landmarks(frame, box), 0
        elif previous is not None:
            landmarks = detect.predict_landmarks(frame, detect.tracking_box(previous))
        since_detect += 1
        if landmarks is None:
            if previous is None:
                raise UserError(f"{name}: no face in frame {index} (the first frame needs one)")
            gap += 1
            if gap > max_gap:
                raise UserError(
                    f"{name}: face lost for more than {max_gap} frames at frame {index}"
                )
            yield frame, previous, True
            continue
        gap, previous = 0, landmarks
        yield frame, landmarks, False


def _closest(faces: list[detect.Face], landmarks: np.ndarray) -> np.ndarray:
    box = geometry.landmark_box(landmarks)
    return max(faces, key=lambda f: geometry.box_iou(f.box, box)).box
