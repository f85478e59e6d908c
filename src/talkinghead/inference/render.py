"""Streaming animation: driver frames in, output frames out, in chunks of bounded size.

Memory stays bounded by ``batch_size`` frames whatever the video length, so the same path serves
offline rendering (larger batches, faster) and live use (batch 1, lowest latency). Time spent in
each stage is accumulated for the caller to report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from talkinghead.inference.compose import paste_back, side_by_side
from talkinghead.inference.driving import track_driver
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


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    held_frames: int = 0

    def add(self, stage: str, seconds: float) -> None:
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
    """Yield one output frame (RGB uint8) per driver frame."""
    times = times if times is not None else StageTimes()
    decoded = _Timed(frames, times, "decode")
    tracked = _Timed(
        track_driver(decoded, head.preset.prep, options.max_gap, driver_name),
        times,
        "landmarks+decode",
    )
    reference, chunk = None, []
    for frame, landmarks, held in tracked:
        reference = landmarks if reference is None else reference
        times.held_frames += held
        chunk.append((frame, landmarks))
        if len(chunk) == options.batch_size:
            yield from _render_chunk(head, person, chunk, reference, options, times)
            chunk = []
    if chunk:
        yield from _render_chunk(head, person, chunk, reference, options, times)
    times.seconds["landmarks"] = times.seconds.pop("landmarks+decode", 0.0) - times.seconds.get(
        "decode", 0.0
    )


def _render_chunk(head, person, chunk, reference, options, times) -> Iterator[np.ndarray]:
    start = time.perf_counter()
    driver = np.stack([landmarks for _, landmarks in chunk])
    targets = head.target_landmarks(person, driver, reference, options.mode)
    faces = head.render(person, targets, options.batch_size)
    times.add("render", time.perf_counter() - start)
    for (frame, _), face, target in zip(chunk, faces, targets):
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
