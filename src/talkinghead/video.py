"""Video decode and encode through PyAV (FFmpeg): the one place that touches containers.

Every reader error becomes a :class:`~talkinghead.errors.UserError` naming the file; every writer
writes to a temporary name and renames on success, so a crash never leaves a partial video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path, temp_path_for

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int  # as the container reports it; 0 when unknown
    width: int
    height: int
    has_audio: bool


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable video ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip().splitlines()[0]


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size and audio presence of a video, without decoding it."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoInfo(
            fps=float(rate),
            num_frames=int(stream.frames or 0),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            has_audio=bool(container.streams.audio),
        )


def read_frames(path: str | Path, every_nth: int = 1) -> Iterator[np.ndarray]:
    """Yield RGB frames [H,W,3] uint8, keeping every ``every_nth`` one.

    Raises UserError naming the file when it cannot be opened, has no video stream, or breaks
    off mid-stream (truncated or corrupt data).
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                if index % every_nth == 0:
                    yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.error.FFmpegError as exc:
            raise UserError(
                f"{path}: corrupt video data after {index} frames ({_reason(exc)})"
            ) from None


def read_tags(path: str | Path) -> dict[str, str]:
    """The container's metadata tags (MP4 ``comment``, ``description``...); {} when none."""
    path = Path(path)
    with _open(path) as container:
        return dict(container.metadata)


def retag(path: str | Path, tags: dict[str, str]) -> None:
    """Add or replace container tags of an MP4 in place: packets are copied, not re-encoded."""
    path = Path(path)
    # Exits run in reverse: the target is closed before atomic_path renames it over the source.
    with (
        _open(path) as source,
        atomic_path(path, suffix=".mp4") as tmp,
        av.open(str(tmp), mode="w", format="mp4") as target,
    ):
        target.metadata.update({**source.metadata, **tags})
        streams = [s for s in source.streams if s.type in ("video", "audio")]
        copies = {s.index: target.add_stream_from_template(s) for s in streams}
        for packet in source.demux(streams):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = copies[packet.stream.index]
            target.mux(packet)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB [H,W,3] uint8; UserError naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({_reason(exc)})") from None


class VideoWriter:
    """H.264 MP4 writer; the file appears under its name only when :meth:`close` succeeds.

    Use as a context manager. Frames are RGB uint8 [H,W,3] with even H and W (yuv420p).
    ``audio_from``: copy the first audio stream of this file into the output (re-encoded AAC).
    ``metadata``: container tags (MP4 ``comment``, ``description``, ``title``...), shown by players.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        crf: int = 18,
        audio_from: Path | None = None,
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.audio_from = audio_from
        self.num_frames = 0
        # The suffix stays .mp4 so FFmpeg picks the container from the name as well.
        self._tmp = temp_path_for(self.path, suffix=".mp4")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._container.metadata.update(metadata or {})
        self._stream = None

    def _open_stream(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"frame size {width}x{height} must be even for H.264 yuv420p")
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": "medium"}
        self._stream = stream
        # MP4 writes its header at the first packet: every stream must exist before that.
        self._audio = None
        if self.audio_from is not None:
            with av.open(str(self.audio_from)) as source:
                if source.streams.audio:
                    rate = source.streams.audio[0].rate or 44100
                    self._audio = self._container.add_stream("aac", rate=rate)

    def write(self, frame: np.ndarray) -> None:
        if self._stream is None:
            self._open_stream(*frame.shape[:2])
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def _copy_audio(self) -> None:
        with av.open(str(self.audio_from)) as source:
            in_audio, out_audio = source.streams.audio[0], self._audio
            duration = self.num_frames / float(self.fps)
            for frame in source.decode(in_audio):
                if frame.time is not None and frame.time > duration:
                    break
                frame.pts = None
                for packet in out_audio.encode(frame):
                    self._container.mux(packet)
            for packet in out_audio.encode(None):
                self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder, add audio, and move the file into place."""
        try:
            if self._stream is None:
                raise ValueError(f"{self.path}: no frames were written")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._copy_audio()
            self._container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written; no file is left behind."""
        self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
