"""The Python API's file-level half: a person driven by a video file (or frames), marked.

    from talkinghead import TalkingHead
    from talkinghead.video import read_image

    head = TalkingHead.from_pretrained()                        # the bundled model
    person = head.personalize([read_image("me.jpg")], finetune_steps=None)
    result = head.animate_video(person, "driver.mp4")           # or frames [T,H,W,3], fps=25
    result.frames                                               # [T,S,S,3] uint8, watermarked
    result.save("me_talking.mp4")                               # + tags, signed C2PA manifest

:class:`~talkinghead.inference.pipeline.TalkingHead` itself is arrays in, arrays out; this module
opens files (through :mod:`talkinghead.video`) and marks what it returns as ``talkinghead animate``
does (:mod:`talkinghead.provenance`): every returned frame carries the invisible watermark, and a
saved video also carries the container tags and the signed C2PA manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import UserError
from talkinghead.inference import jobs
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.inference.render import AnimateOptions, StageTimes, animate_frames
from talkinghead.provenance import MarkingOptions, OutputMark, warn_unmarked
from talkinghead.video import VideoWriter, probe, read_frames

DEFAULT_FPS = 30.0  # frames given as arrays, no rate stated

# A driving video: a file, or its frames (RGB uint8 [H,W,3] each).
Driver = str | Path | np.ndarray | Iterable[np.ndarray]


def finetune_steps_value(value: int | str | None) -> int | None:
    """``--finetune-steps`` as the library takes it: "auto" (or None) -> None, the step count
    chosen by the number of shots (~125 for 1 to ~230 for 30+, early stop); "0" -> 0,
    feed-forward; "N" -> at most N steps."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        steps = int(value)
    except (TypeError, ValueError):
        raise UserError(f"fine-tuning steps must be auto or a number, got {value!r}") from None
    if steps < 0 or steps != float(value):
        raise UserError(f"fine-tuning steps must be auto or a whole number >= 0, got {value!r}")
    return steps


@dataclass
class Animation:
    """What :func:`animate_video` returns: the marked frames and what a video file needs."""

    frames: np.ndarray  # [T,H,W,3] uint8, each with the invisible watermark (unless opted out)
    fps: float
    mark: OutputMark  # the record the saved file is labelled with
    audio_from: Path | None = None  # the driver, when it has a sound track
    notes: list[str] = field(default_factory=list)  # several faces, lost driver frames, ...

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path) -> str:
        """Write an H.264 video labelled as synthetic (tags + signed C2PA manifest), atomically
        complete or not there at all; returns the provenance note (or the unmarked warning)."""
        path = Path(path)
        with VideoWriter(
            path, self.fps, audio_from=self.audio_from, metadata=self.mark.tags()
        ) as w:
            for frame in self.frames:
                w.write(frame)
        return jobs.finish_output(self.mark, path)


def animate_video(
    head: TalkingHead,
    person: Person,
    driver: Driver,
    fps: float | None = None,
    options: AnimateOptions | None = None,
    marking: MarkingOptions | None = None,
) -> Animation:
    """``person`` driven by ``driver`` (a video file, or its frames) -> marked frames.

    ``fps``: the frames' rate (a file's own rate by default, else 30); the watermark turns with
    time, and :meth:`Animation.save` writes at this rate. A file's sound track is kept for
    :meth:`Animation.save`. ``marking=MarkingOptions(enabled=False)`` opts out, with a warning.
    """
    options, marking = options or AnimateOptions(), marking or MarkingOptions()
    frames, name, file_fps, audio_from = _driver_frames(driver)
    fps = fps or file_fps or DEFAULT_FPS
    if not marking.enabled:
        warn_unmarked()
    mark = OutputMark.new(head.model_hash, options.mode, marking, fps)
    times = StageTimes()
    rendered = animate_frames(head, person, frames, options, times, name)
    marked = [mark.frame(frame, index) for index, frame in enumerate(rendered)]
    if not marked:
        raise UserError(f"{name}: no frames to animate")
    notes = list(head.notes)
    if times.held_frames:
        notes.append(f"face lost in {times.held_frames} driver frame(s); held the last landmarks")
    return Animation(np.stack(marked), fps, mark, audio_from, notes)


def _driver_frames(driver: Driver):
    """(frames, name for messages, frame rate, audio source) of a video file or frame sequence."""
    if isinstance(driver, (str, Path)):
        path = Path(driver)
        info = probe(path)  # a missing or unreadable file: its one-line error, before any work
        return read_frames(path), str(path), info.fps, path if info.has_audio else None
    if isinstance(driver, np.ndarray) and driver.ndim != 4:
        raise UserError(f"driver frames must be [T,H,W,3] uint8, got shape {driver.shape}")
    return iter(driver), "driver frames", None, None
