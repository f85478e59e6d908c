"""Video decode and encode through PyAV (FFmpeg): the one place that touches containers.

Every reader error becomes a :class:`~talkinghead.errors.UserError` naming the file; every writer
writes to a temporary name and renames on success, so a crash never leaves a partial video.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
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


def count_frames(path: str | Path) -> int:
    """Frames in the first video stream, counted from its packets (no decoding)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        try:
            # The demuxer's end-of-stream marker is a packet without data: not a frame.
            return sum(packet.size > 0 for packet in container.demux(stream))
        except av.error.FFmpegError as exc:
            raise UserError(f"{path}: corrupt video data ({_reason(exc)})") from None


def pick_frames(
    frames: Iterable[np.ndarray], num_frames: int, num_picks: int
) -> list[tuple[int, np.ndarray]]:
    """``num_picks`` evenly spaced ``(index, frame)`` of a stream of ``num_frames`` frames.

    Holds only the picked frames, and stops reading after the last one: a long HD video costs
    the memory of its picks, not of the video.
    """
    count = min(num_picks, num_frames)
    wanted = set(np.linspace(0, num_frames - 1, count).round().astype(int).tolist())
    picked = []
    for index, frame in enumerate(frames):
        if index in wanted:
            picked.append((index, frame))
            if len(picked) == len(wanted):
                break
    return picked


def sample_frames(path: str | Path, num_picks: int) -> list[tuple[int, np.ndarray]]:
    """Evenly spaced ``(index, frame)`` of a video file, in two passes: count, then decode."""
    num_frames = count_frames(path)
    if num_frames == 0:
        raise UserError(f"{path}: video has zero frames")
    frames = read_frames(path)
    try:
        return pick_frames(frames, num_frames, num_picks)
    finally:
        frames.close()  # closes the container now, not when the generator is collected


def media_kind(path: str | Path) -> str:
    """'image' or 'video': by an image suffix, else from the file's content; UserError naming
    the file when it is neither (FFmpeg would take a broken .jpg for a one-frame video)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    try:
        with Image.open(path):
            return "image"
    except (UnidentifiedImageError, OSError):
        pass
    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                return "video"
    except (av.error.FFmpegError, UnicodeDecodeError):
        pass
    raise UserError(f"{path}: not a readable image or video")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB [H,W,3] uint8; UserError naming the file when unreadable.

    Turned upright by its EXIF orientation (phone photos), 16-bit images scaled to 8 bits,
    transparency composited over white.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, not an image")
    try:
        with Image.open(path) as image:
            return to_rgb8(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({_reason(exc)})") from None


# PIL modes of one channel wider than 8 bits (16-bit PNG/TIFF grey, 32-bit int, float).
_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def to_rgb8(image) -> np.ndarray:
    """A PIL image of any mode as RGB [H,W,3] uint8.

    ``convert("RGB")`` clips 16-bit grey at 255 (a 16-bit PNG turns white), so wide grey is
    scaled: 65535 -> 255 (32-bit data beyond that: its maximum -> 255). Float images are taken
    as 0-1 when they stay within it, else as 0-255. (PIL itself reads 16-bit RGB as 8-bit.)
    """
    if image.mode in _WIDE_GREY:
        values = np.asarray(image, dtype=np.float64)
        peak = float(values.max(initial=0))
        white = (1.0 if peak <= 1 else 255.0) if image.mode == "F" else max(65535.0, peak)
        grey = np.clip(np.rint(values * (255 / white)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if "A" in image.mode or "transparency" in image.info:
        from PIL import Image

        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Save an RGB uint8 image (PNG, JPEG... by suffix); written whole or not at all."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        Image.fromarray(image).save(tmp)


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
