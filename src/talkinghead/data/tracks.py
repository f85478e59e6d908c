"""Face tracks: follow one face through a video and cut stable square crops around it.

The detector runs every ``detect_every`` frames; in between, landmarks are predicted from a box
derived from the previous frame's landmarks (dlib's predictor is ~1 ms, the detector ~10x more).
A track ends when the face is lost, when it jumps (consecutive landmark boxes barely overlap: a
shot cut), or when it drifts away from where it started; each track then gets ONE square box
(the union of its landmark boxes, enlarged by a margin), as in the field's VoxCeleb crops, so the
crop does not jitter from frame to frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image

from talkinghead.config.prep import PrepConfig
from talkinghead.landmarks import detect, geometry

Item = TypeVar("Item")


@dataclass
class Track:
    """A run of frames with one face. Landmarks are in full-frame pixel coordinates."""

    frame_indices: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    confirmed: int = 0  # frames up to the last successful detection

    def __len__(self) -> int:
        return len(self.frame_indices)

    def append(self, index: int, frame: np.ndarray, landmarks: np.ndarray, detected: bool):
        self.frame_indices.append(index)
        self.frames.append(frame)
        self.landmarks.append(landmarks)
        if detected:
            self.confirmed = len(self)

    def truncated(self) -> Track:
        """The track without the frames followed after the face was last detected."""
        n = self.confirmed
        return Track(self.frame_indices[:n], self.frames[:n], self.landmarks[:n], n)


@dataclass(frozen=True)
class CroppedTrack:
    frame_indices: np.ndarray  # [T] indices into the decoded (kept) frames
    crops: np.ndarray  # [T,S,S,3] uint8
    landmarks: np.ndarray  # [T,68,2] float32 in crop pixels
    box: np.ndarray  # the track's square box (x0, y0, x1, y1) in frame pixels


def find_tracks(frames: Iterable[np.ndarray], config: PrepConfig) -> Iterator[Track]:
    """Split a frame sequence into face tracks (unfiltered by length).

    A detection that misses on a frame of an active track is retried on the next frames while
    the landmarks keep following; after ``max_missed_detections`` misses in a row the face is
    lost, and the frames followed since its last detection are dropped as untrusted.
    """
    track: Track | None = None
    anchor_box = previous_box = previous_landmarks = None
    since_detect, missed = config.detect_every, 0
    for index, frame in enumerate(frames):
        detected = False
        if track is None or since_detect >= config.detect_every:
            faces = detect.detect_faces(frame, config.detector, config.upsample)
            if faces:
                box = _best_match(faces, previous_box) if track is not None else faces[0].box
                landmarks = detect.predict_landmarks(frame, box)
                since_detect, missed, detected = 0, 0, True
            elif track is None:
                continue
            elif (missed := missed + 1) > config.max_missed_detections:
                yield track.truncated()
                track = None
                continue
        if not detected:
            landmarks = detect.predict_landmarks(frame, detect.tracking_box(previous_landmarks))
        since_detect += 1
        box = geometry.landmark_box(landmarks)
        jumped = track is not None and (
            geometry.box_iou(box, previous_box) < config.new_track_iou
            or geometry.box_iou(box, anchor_box) < config.new_track_iou / 2
        )
        full = track is not None and 0 < config.max_track_frames <= len(track)
        if track is None or jumped or full:
            if track is not None:
                yield track
            track, anchor_box = Track(), box
        track.append(index, frame, landmarks, detected)
        previous_box, previous_landmarks = box, landmarks
    if track is not None:
        yield track


def _best_match(faces: list[detect.Face], box: np.ndarray) -> np.ndarray:
    """The detection overlapping the current track most (the largest face on a tie)."""
    return max(faces, key=lambda f: geometry.box_iou(f.box, box)).box


def crop_track(track: Track, config: PrepConfig) -> CroppedTrack:
    """Smooth the track's landmarks, choose its square box and resample every frame into it."""
    landmarks = geometry.smooth_sequence(np.stack(track.landmarks), config.smoothing_window)
    boxes = geometry.landmark_box(landmarks)
    box = geometry.square_box(geometry.union_box(boxes), config.crop_margin)
    transform = geometry.crop_transform(box, config.crop_size)
    crops = np.stack([crop_image(frame, box, config.crop_size) for frame in track.frames])
    return CroppedTrack(
        frame_indices=np.asarray(track.frame_indices, dtype=np.int32),
        crops=crops,
        landmarks=transform.apply(landmarks).astype(np.float32),
        box=box,
    )


def smooth_stream(
    items: Iterable[tuple[Item, np.ndarray]], window: int
) -> Iterator[tuple[Item, np.ndarray]]:
    """:func:`geometry.smooth_sequence` on a stream of ``(item, landmarks)``, in order.

    The same centred moving average as ``prep`` applies to a whole track (see
    :func:`crop_track`), equal to it frame for frame, edges included; each result comes
    ``window // 2`` frames late, so a live driver waits two frames at the default window of 5.
    """
    half = max(window, 1) // 2
    recent: deque[tuple[Item, np.ndarray]] = deque(maxlen=2 * half + 1)
    for count, item in enumerate(items, start=1):
        recent.append(item)
        if count > half:  # frame count-1-half now has all of its window
            yield _smoothed_at(recent, len(recent) - 1 - half, window)
    for position in range(max(len(recent) - half, 0), len(recent)):
        # The last frames: their window is cut short by the end, as in smooth_sequence.
        yield _smoothed_at(recent, position, window)


def _smoothed_at(recent: deque, position: int, window: int) -> tuple:
    values = np.stack([landmarks for _, landmarks in recent])
    return recent[position][0], geometry.smooth_sequence(values, window)[position]


def crop_image(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Resample the square ``box`` of an RGB image to ``size`` x ``size``; outside is black.

    The box edges map onto the output edges exactly as :class:`geometry.CropTransform` maps
    points (pixel-corner convention), so landmarks transformed with it land on the same pixels.
    PIL's separable resize (antialiased when shrinking) is ~5x faster than a generic affine warp.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = int(np.floor(x0)), int(np.floor(y0))
    right, bottom = int(np.ceil(x1)), int(np.ceil(y1))
    # Integer crop first: PIL fills the part outside the frame with black.
    region = Image.fromarray(image).crop((left, top, right, bottom))
    resample = Image.Resampling.BICUBIC if x1 - x0 < size else Image.Resampling.BILINEAR
    inner = (x0 - left, y0 - top, x1 - left, y1 - top)
    return np.asarray(region.resize((size, size), resample, box=inner))
