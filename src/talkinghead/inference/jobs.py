"""File-level jobs shared by the CLI and the web demo: load a model, read shots, animate a video.

Everything here is a thin layer over :class:`TalkingHead`, :mod:`talkinghead.video` and
:mod:`talkinghead.provenance` (every written frame is marked as synthetic unless opted out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkinghead import assets
from talkinghead.errors import UserError
from talkinghead.inference.overlap import BackgroundSink
from talkinghead.inference.person import Person
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.inference.render import AnimateOptions, StageTimes, animate_frames
from talkinghead.provenance import MarkingOptions, OutputMark
from talkinghead.video import VideoWriter, probe, read_frames, read_image


def load_model(
    path: str | Path | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    backend: str = "torch",
) -> TalkingHead:
    """A model bundle by path, or the bundled default.

    ``backend``: what renders frames, ``torch`` or ``onnxruntime`` (each person's network is
    exported to ONNX when first rendered: :mod:`talkinghead.inference.onnx_backend`).
    """
    if backend not in ("torch", "onnxruntime"):
        raise UserError(f"unknown backend {backend!r} (torch or onnxruntime)")
    if backend == "onnxruntime":
        from talkinghead.inference import onnx_backend

        onnx_backend.require_onnxruntime()  # before the model loads
    head = TalkingHead.from_checkpoint(path or assets.default_model_path(), device, precision)
    if backend == "onnxruntime":
        head.backend_renderer = onnx_backend.OnnxRenderer(head)
    return head


def read_shots(
    photos: list[Path] | None = None, video: Path | None = None, num_frames: int = 8
) -> tuple[list[np.ndarray], list[str]]:
    """Images of the person: photo files, or ``num_frames`` evenly spaced frames of a video."""
    if photos:
        return [read_image(p) for p in photos], [str(p) for p in photos]
    if video is None:
        raise UserError("give photos or a video of the person")
    frames = list(read_frames(video))
    if not frames:
        raise UserError(f"{video}: video has zero frames")
    picks = np.linspace(0, len(frames) - 1, min(num_frames, len(frames))).round().astype(int)
    return [frames[i] for i in picks], [f"{video} frame {i}" for i in picks]


def personalize(
    head: TalkingHead,
    photos: list[Path] | None,
    video: Path | None,
    num_frames: int = 8,
    steps: int | None = 0,
    progress: bool = True,
) -> Person:
    images, names = read_shots(photos, video, num_frames)
    return head.personalize(images, finetune_steps=steps, progress=progress, names=names)


@dataclass
class AnimateReport:
    out: Path
    frames: int
    fps: float
    seconds: float
    times: StageTimes
    notes: list[str]

    def __str__(self) -> str:
        rate = self.frames / max(self.seconds, 1e-9)
        parts = ", ".join(
            f"{k} {1e3 * v / max(self.frames, 1):.1f}" for k, v in self.times.seconds.items()
        )
        lines = [
            f"animate: {self.frames} frames at {self.fps:.2f} fps -> {self.out}",
            f"animate: {rate:.1f} frames/s end to end (ms/frame: {parts})",
        ]
        if self.times.held_frames:
            lines.append(
                f"animate: note: face lost in {self.times.held_frames} driver frame(s); "
                "held the last landmarks"
            )
        lines += [f"animate: note: {note}" for note in self.notes]
        return "\n".join(lines)


def animate_file(
    head: TalkingHead,
    person: Person,
    driver: Path,
    out: Path,
    options: AnimateOptions = AnimateOptions(),
    frames_dir: Path | None = None,
    stream: bool = False,
    progress: bool = True,
    marking: MarkingOptions = MarkingOptions(),
) -> AnimateReport:
    """Render ``person`` driven by ``driver`` into the H.264 video ``out`` (driver's fps/audio).

    Every frame of the video and of ``frames_dir`` carries the watermark, and each file the
    signed label, unless ``marking`` opts out. The video appears under its name only when
    complete and labelled; on any error nothing is left behind.
    """
    info = probe(driver)
    times, start = StageTimes(), time.perf_counter()
    mark = OutputMark.new(head.model_hash, options.mode, marking, info.fps)
    frames = animate_frames(head, person, read_frames(driver), options, times, str(driver))
    bar = tqdm(total=info.num_frames or None, unit="frame", desc="animate", disable=not progress)
    audio = driver if info.has_audio else None
    with VideoWriter(out, info.fps, audio_from=audio, metadata=mark.tags()) as writer:

        def write(item: tuple[int, np.ndarray]) -> None:  # mark and encode, behind the renderer
            index, frame = item
            mark_start = time.perf_counter()
            marked = mark.frame(frame, index)
            encode_start = time.perf_counter()
            writer.write(marked)
            times.add("mark", encode_start - mark_start)
            times.add("encode", time.perf_counter() - encode_start)
            if frames_dir is not None:
                # Marked (from the unmarked frame) and labelled: ~10 ms a picture for signing.
                png_start = time.perf_counter()
                mark.save_png(frames_dir / f"frame-{index:06d}.png", frame, index)
                times.add("png", time.perf_counter() - png_start)
            bar.update()
            if stream:
                bar.set_postfix(fps=f"{(index + 1) / (time.perf_counter() - start):.1f}")

        if options.overlap:
            with BackgroundSink(write, 2 * options.batch_size, "mark+encode") as sink:
                for item in enumerate(frames):
                    sink.put(item)
        else:
            for item in enumerate(frames):
                write(item)
    bar.close()
    finish_start = time.perf_counter()
    note = finish_output(mark, out)
    times.add("mark", time.perf_counter() - finish_start)
    return AnimateReport(
        out, times.frames, info.fps, time.perf_counter() - start, times, [*head.notes, note]
    )


def finish_output(mark: OutputMark, path: Path) -> str:
    """Label the written video (tags + C2PA: one remux); on failure remove it, so that an
    unlabelled video never looks like a finished one. Returns the note for the user."""
    try:
        return mark.finish(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
