"""Driver landmarks, frame by frame, for animation: detect, track, bridge, smooth, and choose
the reference frame that relative motion starts from.

Real clips often open on a fade from black: frames before the driver's first face get no
landmarks here (``None``) and the caller shows the reference pose for them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from talkinghead.config.prep import PrepConfig
from talkinghead.data.tracks import smooth_stream
from talkinghead.errors import UserError
from talkinghead.landmarks import detect, geometry

REFERENCE_CHOICES = ("first", "best")  # or a frame number


def track_driver(
    frames: Iterable[np.ndarray],
    config: PrepConfig,
    max_gap: int = 15,
    name: str = "driver",
    smooth_window: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray | None, bool]]:
    """Yield ``(frame, landmarks [68,2] or None, held)`` for every frame, in frame pixels.

    Landmarks are smoothed over time with ``prep``'s moving average (``smooth_window`` frames,
    default ``config.smoothing_window``; 1 = raw), so a driver moves as the training clips did.
    They are None for the frames before the first face; where the face is lost later, the last
    good landmarks are held (``held`` True) for at most ``max_gap`` frames.
    """
    window = config.smoothing_window if smooth_window is None else smooth_window
    followed = iter(_follow(frames, config, max_gap, name))
    for frame, landmarks, held in followed:
        if landmarks is not None:
            first = (frame, landmarks, held)
            break
        yield frame, None, False
    else:
        return
    pairs = (((f, h), lm) for f, lm, h in itertools.chain([first], followed))
    for (frame, held), landmarks in smooth_stream(pairs, window):
        yield frame, landmarks, held


def _follow(frames, config, max_gap, name) -> Iterator[tuple[np.ndarray, np.ndarray | None, bool]]:
    """Raw tracking of a whole driver (see :class:`FaceFollower`): the last landmarks are held
    while the face is lost, for at most ``max_gap`` frames."""
    follower, count = FaceFollower(config), 0
    for index, frame in enumerate(frames):
        count, landmarks = index + 1, follower.step(frame)
        if landmarks is None and follower.previous is None:
            yield frame, None, False
        elif landmarks is None:
            if follower.gap > max_gap:
                raise UserError(
                    f"{name}: face lost for more than {max_gap} frames at frame {index}"
                )
            yield frame, follower.previous, True
        else:
            yield frame, landmarks, False
    if follower.previous is None:
        raise UserError(f"{name}: no face in any of its {count} frames")


class FaceFollower:
    """Raw landmarks one frame at a time: the detector every ``config.detect_every`` frames
    (every frame until the first face and while it is lost), landmarks following the face in
    between (~10x cheaper). Shared by whole drivers (:func:`track_driver`) and live cameras."""

    def __init__(self, config: PrepConfig, detect_near: bool = True):
        self.config = config
        # Re-detect a followed face in a window around it (detect.detect_near: its cost does not
        # grow with the frame size), the whole frame only when it is not there.
        self.detect_near = detect_near
        self.previous: np.ndarray | None = None  # the last landmarks found [68,2]
        self.gap = 0  # frames since the face was last found
        self._since_detect = config.detect_every
        self._before: np.ndarray | None = None

    def step(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks [68,2] (frame pixels) of the followed face in ``frame``, or None."""
        config, previous, landmarks = self.config, self.previous, None
        if previous is None or self._since_detect >= config.detect_every or self.gap:
            faces = []
            if previous is not None and not self.gap and self.detect_near:
                faces = detect.detect_near(frame, previous, config.detector)
            faces = faces or detect.detect_faces(frame, config.detector, config.upsample)
            if faces:
                box = faces[0].box if previous is None else _closest(faces, previous)
                landmarks, self._since_detect = detect.predict_landmarks(frame, box), 0
        else:
            landmarks = detect.predict_landmarks(frame, detect.tracking_box(previous))
        self._since_detect += 1
        self._before = previous
        if landmarks is None:
            self.gap += previous is not None
        else:
            self.gap, self.previous = 0, landmarks
        return landmarks

    def reject(self) -> None:
        """The last landmarks were not a face after all (the caller's check): forget them and
        run the detector on the next frame."""
        self.previous, self.gap = self._before, self.gap + 1


def _closest(faces: list[detect.Face], landmarks: np.ndarray) -> np.ndarray:
    box = geometry.landmark_box(landmarks)
    return max(faces, key=lambda f: geometry.box_iou(f.box, box)).box


@dataclass(frozen=True)
class Reference:
    index: int  # driver frame number
    landmarks: np.ndarray  # [68,2] its (smoothed) landmarks, frame pixels
    first_face: int  # the first driver frame with a face (> 0: a fade-in or an empty start)


def parse_reference(text: str) -> str | int:
    """``first``, ``best`` or a frame number >= 0; ValueError otherwise."""
    if text in REFERENCE_CHOICES:
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"reference frame must be first, best or a frame number, got {text!r}")


def choose_reference(
    frames: Iterable[np.ndarray],
    config: PrepConfig,
    reference: str | int = "first",
    source_landmarks: np.ndarray | None = None,
    max_gap: int = 15,
    name: str = "driver",
    smooth_window: int | None = None,
) -> Reference:
    """The driver frame that relative motion starts from: its pose is mapped onto the source's.

    ``first``: the first frame with a face (reads only that far). A number: that frame.
    ``best``: the frame closest in pose to ``source_landmarks`` (the person's first shot), as
    first-order-model's ``find_best_frame``, here after a similarity alignment (see
    :func:`pose_distance`); reads the whole driver. Tracks exactly as :func:`track_driver` does,
    so the landmarks are the ones animation will see.
    """
    if reference == "best" and source_landmarks is None:
        raise ValueError("reference 'best' needs the source landmarks")
    tracked = track_driver(frames, config, max_gap, name, smooth_window)
    first_face, best, count = -1, None, 0
    for index, (_, landmarks, held) in enumerate(tracked):
        count = index + 1
        if landmarks is None:
            continue
        first_face = index if first_face < 0 else first_face
        if isinstance(reference, int) and reference < first_face:
            raise UserError(
                f"{name}: frame {reference} has no face (the first face is at frame {first_face})"
            )
        if reference == "first" or reference == index:
            return Reference(index, landmarks, first_face)
        if reference == "best" and not held:
            distance = pose_distance(landmarks, source_landmarks)
            if best is None or distance < best[0]:
                best = (distance, Reference(index, landmarks, first_face))
    if best is None:
        raise UserError(f"{name}: has {count} frames, no frame {reference}")
    return best[1]


def pose_distance(landmarks: np.ndarray, other: np.ndarray) -> float:
    """How far two faces are in pose and expression: RMS distance of their landmarks [68,2]
    after a similarity alignment (Procrustes: translation, scale, rotation), in units of
    face size. Position, size and in-plane tilt of the face do not count."""
    a, b = (np.asarray(p, np.float64) - np.mean(p, axis=0) for p in (landmarks, other))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    # The best rotation leaves |a|^2 + |b|^2 - 2 * (sum of the singular values of a^T b); a
    # mirror image is no rotation, so the smaller value changes sign when only a mirror fits.
    u, singular, vt = np.linalg.svd(a.T @ b)
    singular[-1] *= np.sign(np.linalg.det(u @ vt)) or 1.0
    return float(np.sqrt(max(2.0 - 2.0 * singular.sum(), 0.0) / len(a)))
