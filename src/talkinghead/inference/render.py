"""Streaming animation: driver frames in, output frames out, in chunks of bounded size.

Memory stays bounded by ``batch_size`` frames whatever the video length, so the same path serves
offline rendering (larger batches, faster) and live use (batch 1, lowest latency). Time spent in
each stage is accumulated for the caller to report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from talkinghead.errors import UserError
from talkinghead.inference.compose import paste_back, side_by_side
from talkinghead.inference.driving import track_driver
from talkinghead.inference.overlap import prefetch
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.landmarks.rasterize import draw_landmarks


@dataclass(frozen=True)
class AnimateOptions:
    mode: str = "relative"  # relative | absolute (see TalkingHead.target_landmarks)
    batch_size: int = 8
    side_by_side: bool = False  # driver | landmarks | result
    paste_back: bool = False  # the face pasted into the full source photo
    max_gap: int = 15  # frames a lost driver face is bridged by holding its last landmarks
    smooth_window: int | None = None  # driver landmark smoothing (frames); None = as prep
    # Relative motion starts from these driver landmarks (frame pixels): see
    # driving.choose_reference for a frame number or the frame closest in pose to the source.
    # None: the driver's first frame with a face.
    reference_landmarks: np.ndarray | None = field(default=None, compare=False)
    # Without reference_landmarks, the faceless opening frames wait in memory for the first
    # face (its landmarks are the reference): at most this many.
    max_lead_frames: int = 150
    # Decode the driver in a thread ahead of the renderer, and mark + encode behind it
    # (inference/overlap.py); False runs every stage in the caller's thread, one after
    # another. The landmarks stay in the caller's thread: dlib holds Python's GIL, so in the
    # decode thread they held up the renderer's (0.96x serial at batch 8, where decode alone
    # ahead gave 1.05x; with AVX2 kernels 1.05x and 1.13x).
    overlap: bool = True


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    held_frames: int = 0  # driver face lost: the last landmarks held
    lead_frames: int = 0  # before the driver's first face: the reference pose shown
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        """Add time to a stage; stages in other threads (overlap) add to the same totals."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


class _Timed:
    """Iterates ``items`` and adds the time spent producing each one to ``stage``."""

    def __init__(self, items: Iterable, times: StageTimes, stage: str):
        self.items, self.times, self.stage = iter(items), times, stage

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.times.add(self.stage, time.perf_counter() - start)


def animate_frames(
    head: TalkingHead,
    person: Person,
    frames: Iterable[np.ndarray],
    options: AnimateOptions = AnimateOptions(),
    times: StageTimes | None = None,
    driver_name: str = "driver",
) -> Iterator[np.ndarray]:
    """Yield one output frame (RGB uint8) per driver frame.

    Frames before the driver's first face (a fade-in) show the person in the reference pose.
    """
    times = times if times is not None else StageTimes()
    if options.overlap:  # the next batches' frames are decoded while this one renders
        frames = prefetch(frames, 2 * options.batch_size, "driver decode")
    decoded = _Timed(frames, times, "decode")
    tracked = _Timed(
        track_driver(
            decoded, head.preset.prep, options.max_gap, driver_name, options.smooth_window
        ),
        times,
        "landmarks+decode",
    )
    items = _with_reference(tracked, options, times, driver_name)
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == options.batch_size:
            yield from _render_chunk(head, person, chunk, options, times)
            chunk = []
    if chunk:
        yield from _render_chunk(head, person, chunk, options, times)
    times.seconds["landmarks"] = times.seconds.pop("landmarks+decode", 0.0) - times.seconds.get(
        "decode", 0.0
    )


def _with_reference(tracked, options, times, name) -> Iterator[tuple]:
    """``(frame, landmarks, reference)`` per driver frame; the faceless opening frames get the
    reference landmarks, so they wait (at most ``max_lead_frames``) when it is not given."""
    reference, leading = options.reference_landmarks, []
    for frame, landmarks, held in tracked:
        if landmarks is None:
            times.lead_frames += 1
            if reference is not None:
                yield frame, reference, reference
                continue
            leading.append(frame)
            if len(leading) > options.max_lead_frames:
                raise UserError(f"{name}: no face in the first {options.max_lead_frames} frames")
            continue
        reference = landmarks if reference is None else reference
        yield from ((lead, reference, reference) for lead in leading)
        leading = []
        times.held_frames += held
        yield frame, landmarks, reference


def _render_chunk(head, person, chunk, options, times) -> Iterator[np.ndarray]:
    start = time.perf_counter()
    driver = np.stack([landmarks for _, landmarks, _ in chunk])
    targets = head.target_landmarks(person, driver, chunk[0][2], options.mode)
    faces = head.render(person, targets, options.batch_size)
    times.add("render", time.perf_counter() - start)
    for (frame, _, _), face, target in zip(chunk, faces, targets):
        start = time.perf_counter()
        out = face
        if options.paste_back:
            out = paste_back(person.photo, face, person.photo_box, target)
        if options.side_by_side:
            out = side_by_side(
                frame, draw_landmarks(target, face.shape[0]), out, height=out.shape[0]
            )
        out = _even(out)
        times.add("compose", time.perf_counter() - start)
        times.frames += 1
        yield out


def _even(image: np.ndarray) -> np.ndarray:
    """H.264 (yuv420p) needs even sides: drop a last odd row/column."""
    return image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
