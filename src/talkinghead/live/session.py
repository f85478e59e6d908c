"""One live session: camera frames in, marked and labelled frames of the person out.

    session = LiveSession(head, person)
    for frame in camera:                      # RGB uint8, any size
        shown = session.step(frame, captured_at)
        show(shown.image)                     # watermarked, "SYNTHETIC" burnt in

Per frame: landmarks (the detector every ``prep.detect_every`` frames, tracked in between, as
``animate`` follows a driver), a causal One Euro filter, relative motion from the first frame
with a face, a batch-1 render, the watermark, the label. With no face in view the last good
output is held (before any face: the person's own photo) and ``message`` says so; when the face
returns the session carries on from it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from talkinghead.inference.driving import FaceFollower
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.inference.render import StageTimes
from talkinghead.landmarks import geometry
from talkinghead.live.label import burn_label
from talkinghead.live.smoothing import LandmarkFilter
from talkinghead.provenance import MarkingOptions, OutputMark

NO_FACE_YET = "no face in view yet: showing the photo"
NO_FACE = "no face in view: holding the last frame"
# Tracked landmarks on a frame this flat (luma std in levels, inside the face box) are the
# predictor guessing in the dark (lens covered, camera blacked out): no face.
MIN_FACE_CONTRAST = 4.0
MIN_FACE_INSIDE = 0.5  # fraction of the face box that must lie inside the frame


@dataclass
class LiveFrame:
    image: np.ndarray  # RGB uint8 [size,size,3], watermarked, "SYNTHETIC" label burnt in
    face_found: bool  # False: no driver face this frame -> the last good output is held
    message: str | None  # why the frame is held; None when the face was rendered
    latency_s: float  # capture timestamp -> output ready


@dataclass
class RecentRate:
    """Frames per second and median latency over the last ``window`` seconds of outputs (what
    the terminal, the preview and the web page show while live)."""

    window: float = 2.0
    frames: deque[tuple[float, float]] = field(default_factory=deque)  # (ready at, latency s)

    def add(self, ready_at: float, latency_s: float) -> None:
        self.frames.append((ready_at, latency_s))
        while ready_at - self.frames[0][0] > self.window:
            self.frames.popleft()

    def rate(self) -> float | None:
        """Frames per second; None before two frames a moment apart."""
        span = self.frames[-1][0] - self.frames[0][0] if self.frames else 0.0
        return (len(self.frames) - 1) / span if len(self.frames) >= 2 and span > 0 else None

    def latency(self) -> float | None:
        """Median seconds from capture to output; None before the first frame."""
        return statistics.median(lat for _, lat in self.frames) if self.frames else None


class LiveSession:
    """Drives ``person`` with a live face; keeps tracking state between :meth:`step` calls.

    ``mode``: relative (default) or absolute motion (``TalkingHead.target_landmarks``).
    ``smooth_window``: how strongly a still face is smoothed, in frames (default prep's, 5;
    1 = raw). ``size``: output side in pixels (the face is rendered at the model's size and
    enlarged; None keeps the model's). ``fps``: the nominal rate the watermark turns with.
    """

    def __init__(
        self,
        head: TalkingHead,
        person: Person,
        *,
        mode: str = "relative",
        smooth_window: int | None = None,
        label: bool = True,
        size: int | None = 256,
        fps: float = 30.0,
    ):
        if mode not in ("relative", "absolute"):
            raise ValueError(f"unknown motion mode {mode!r} (relative or absolute)")
        self.head, self.person, self.mode, self.label = head, person, mode, label
        self.size = size or head.image_size
        self.fps = fps
        window = head.preset.prep.smoothing_window if smooth_window is None else smooth_window
        self.filter = LandmarkFilter(window)
        self.follower = FaceFollower(head.preset.prep)
        # Every live frame is marked: there is no opt-out here (the CLI offers none either).
        self.mark = OutputMark.new(head.model_hash, mode, MarkingOptions(), fps)
        self.times = StageTimes()  # seconds per stage (landmarks, render, mark) and counts
        self.reference: np.ndarray | None = None
        self._last: np.ndarray | None = None  # the frame shown last (held without a face)
        self._rendered = False  # a face has been rendered (else the photo is shown)
        self._start: float | None = None

    def warm_up(self) -> None:
        """Render the person once, unseen, so the first live frame is not the slow one (with
        ONNX Runtime this exports the person's network: seconds)."""
        self.head.render(self.person, self.person.reference_landmarks[None], 1)

    def reset(self) -> None:
        """Forget the reference pose: the next frame with a face becomes it."""
        self.reference = None
        self.filter.reset()

    def step(self, frame: np.ndarray, captured_at: float | None = None) -> LiveFrame:
        """One RGB uint8 camera frame [H,W,3] -> one output frame.

        ``captured_at``: when the camera delivered the frame, on the ``time.perf_counter``
        clock (default: now); latency and the watermark's phase are measured from it.
        """
        captured_at = time.perf_counter() if captured_at is None else captured_at
        targets = self.prepare(frame, captured_at)
        face = None
        if targets is not None:
            start = time.perf_counter()
            face = self.head.render(self.person, targets, 1)[0]
            self.add_render_time(time.perf_counter() - start)
        return self.shown(face, captured_at)

    def prepare(self, frame: np.ndarray, captured_at: float) -> np.ndarray | None:
        """The first half of :meth:`step`: the targets ``[1,68,2]`` (crop pixels) to render for
        this frame, or None when it has no face (:meth:`shown` then holds the last output)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected RGB uint8 [H,W,3], got {frame.dtype} {frame.shape}")
        self._start = captured_at if self._start is None else self._start
        landmarks = self._landmarks(frame, captured_at)
        if landmarks is None:
            return None
        self.reference = landmarks if self.reference is None else self.reference
        return self.head.target_landmarks(self.person, landmarks[None], self.reference, self.mode)

    def add_render_time(self, seconds: float) -> None:
        self.times.add("render", seconds)
        self.times.frames += 1

    def shown(self, face: np.ndarray | None, captured_at: float) -> LiveFrame:
        """The second half of :meth:`step`, called in capture order: the rendered face
        enlarged, watermarked and labelled, or with ``face`` None the last output held."""
        if face is None:
            message = NO_FACE if self._rendered else NO_FACE_YET
            if self._last is None:
                self._last = self._finish(self.person.shots[0], captured_at)
            return LiveFrame(self._last.copy(), False, message, time.perf_counter() - captured_at)
        self._last, self._rendered = self._finish(face, captured_at), True
        return LiveFrame(self._last.copy(), True, None, time.perf_counter() - captured_at)

    def _landmarks(self, frame: np.ndarray, captured_at: float) -> np.ndarray | None:
        """The smoothed driver landmarks [68,2] of this frame, or None (no face in view)."""
        start = time.perf_counter()
        landmarks = self.follower.step(frame)
        if landmarks is not None and not _looks_like_face(frame, landmarks):
            self.follower.reject()
            landmarks = None
        if landmarks is None:
            self.filter.reset()  # the face that returns starts afresh, not from the old pose
            self.times.held_frames += 1
        else:
            landmarks = self.filter(landmarks, captured_at)
        self.times.add("landmarks", time.perf_counter() - start)
        return landmarks

    def _finish(self, face: np.ndarray, captured_at: float) -> np.ndarray:
        """Enlarge, watermark (the pattern's phase from the capture time), label."""
        start = time.perf_counter()
        if face.shape[0] != self.size:
            resized = Image.fromarray(face).resize((self.size, self.size), Image.Resampling.BICUBIC)
            face = np.asarray(resized)
        index = round((captured_at - self._start) * self.fps)
        out = self.mark.frame(face, index)
        out = burn_label(out) if self.label else out
        self.times.add("mark", time.perf_counter() - start)
        return out


def _looks_like_face(frame: np.ndarray, landmarks: np.ndarray) -> bool:
    """Whether tracked landmarks still sit on something face-like: mostly inside the frame and
    not on a flat (black, covered) picture. The detector, every few frames, decides the rest."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = geometry.landmark_box(landmarks)
    area = max((x1 - x0) * (y1 - y0), 1.0)
    left, top = int(max(x0, 0)), int(max(y0, 0))
    right, bottom = int(min(x1, width)), int(min(y1, height))
    if right <= left or bottom <= top or (right - left) * (bottom - top) < MIN_FACE_INSIDE * area:
        return False
    region = frame[top:bottom, left:right].astype(np.float32)
    luma = region @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(luma.std()) >= MIN_FACE_CONTRAST
