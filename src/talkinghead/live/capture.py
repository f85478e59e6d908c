"""Frames from a camera, or from a video file played as one, without queueing.

A capture thread reads as fast as the source delivers and keeps only the newest frame; the
render loop takes the newest whenever it is ready for one. When the machine falls behind, the
frames in between are dropped (counted), never queued: latency stays at one frame plus the
render, however slow the render is.

Cameras go through FFmpeg's capture devices in PyAV: v4l2 on Linux (``/dev/videoN``),
AVFoundation on macOS (index N) and DirectShow on Windows (``video=NAME``).
"""

from __future__ import annotations

import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from talkinghead.errors import UserError
from talkinghead.video import media_kind, probe, read_frames


@dataclass(frozen=True)
class Captured:
    frame: np.ndarray  # RGB uint8 [H,W,3]
    index: int  # the source's frame number (a file's, counting frames it dropped)
    captured_at: float  # time.perf_counter() when the source delivered it


class FrameSource(ABC):
    """The newest frame of a source read by a background thread. Use as a context manager.

    ``take(timeout)`` returns the newest frame not yet taken (waiting for one), or None when
    the source has ended (``ended``; ``error`` says why if it broke off) or on timeout.
    ``captured``: frames the source delivered; ``taken``: those handed out; the rest dropped.
    """

    name = "source"
    fps = 30.0

    def __init__(self):
        self.captured = self.taken = 0
        self.newest_index = -1  # the frame number of the newest frame delivered
        self.ended, self.error = False, None
        self._newest: Captured | None = None
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture {self.name}", daemon=True)

    def start(self) -> FrameSource:
        self._thread.start()
        return self

    def __enter__(self) -> FrameSource:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and release the device (waits for the current read)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        elif self._thread.ident is None:  # never started: the thread did not release it
            self._release()

    def _release(self) -> None:  # noqa: B027 (a hook: only cameras hold a device to close)
        """Close the device (the thread does, when it ends)."""

    @property
    def dropped(self) -> int:
        """Frames delivered but never taken (excluding one still waiting to be taken)."""
        with self._ready:
            return self.captured - self.taken - (self._newest is not None)

    def take(self, timeout: float | None = None) -> Captured | None:
        with self._ready:
            self._ready.wait_for(lambda: self._newest is not None or self.ended, timeout)
            item, self._newest = self._newest, None
            self.taken += item is not None
            return item

    def _publish(self, frame: np.ndarray, index: int) -> None:
        with self._ready:
            self._newest = Captured(frame, index, time.perf_counter())
            self.captured, self.newest_index = self.captured + 1, index
            self._ready.notify_all()

    def _run(self) -> None:
        try:
            self._read()
        except Exception as exc:  # the device broke off: the loop reports it and stops
            self.error = _reason(exc)
        finally:
            with self._ready:
                self.ended = True
                self._ready.notify_all()

    @abstractmethod
    def _read(self) -> None:
        """Deliver the source's frames with :meth:`_publish` until it ends or ``_stop`` is set
        (runs in the capture thread; an exception ends the source with ``error``)."""


class CameraSource(FrameSource):
    """A webcam: ``device`` is a number (the platform's N-th camera) or the FFmpeg device name
    (``/dev/video2``, ``video=Integrated Camera``). Opened here, so a missing camera is a
    one-line error before anything else starts."""

    def __init__(self, device: str | int, input_format: str | None = None):
        # input_format: another FFmpeg input device (e.g. lavfi, for tests) than the platform's.
        self.name, default_format = _device(str(device))
        input_format = input_format or default_format
        if input_format == "v4l2" and not Path(self.name).exists():
            raise UserError(f"{self.name}: no such camera")
        try:
            self._container = av.open(self.name, format=input_format)
        except (av.error.FFmpegError, OSError) as exc:
            raise UserError(f"{self.name}: cannot open the camera ({_reason(exc)})") from None
        stream = self._container.streams.video[0]
        self.fps = float(stream.average_rate or stream.guessed_rate or 30)
        super().__init__()

    def _read(self) -> None:
        try:
            for index, frame in enumerate(self._container.decode(video=0)):
                self._publish(frame.to_ndarray(format="rgb24"), index)
                if self._stop.is_set():
                    return
            raise OSError("the camera stopped delivering frames")
        finally:
            self._release()

    def _release(self) -> None:
        self._container.close()


class FileSource(FrameSource):
    """A video file played at its own frame rate, as a camera would deliver it: frame i is
    published at ``i / fps`` seconds after the start, never earlier; a frame the decoder only
    reaches more than a frame late is skipped, as a camera does not wait. ``loop``: start over
    at the end (for benchmarks)."""

    def __init__(self, path: str | Path, loop: bool = False):
        self.path, self.loop = Path(path), loop
        self.name = str(path)
        if media_kind(self.path) == "image":
            raise UserError(f"{path}: a still image: the driver must be a video")
        self.fps = probe(self.path).fps  # checks the file: a one-line error names it
        self.skipped = 0  # frames the decoder reached too late to publish
        super().__init__()

    def _read(self) -> None:
        start, index, period = time.perf_counter(), 0, 1.0 / self.fps
        while not self._stop.is_set():
            for frame in read_frames(self.path):
                due = start + index * period
                wait = due - time.perf_counter()
                if wait > 0 and self._stop.wait(wait):
                    return
                if wait < -period:
                    self.skipped += 1
                else:
                    self._publish(frame, index)
                index += 1
                if self._stop.is_set():
                    return
            if not self.loop:
                return


def open_source(camera: str | int | None, driver: Path | None, loop: bool = False) -> FrameSource:
    """The camera, or the driver file played as one (not started)."""
    if driver is not None:
        return FileSource(driver, loop)
    return CameraSource(0 if camera is None else camera)


def _device(device: str) -> tuple[str, str]:
    """(FFmpeg device name, input format) for this platform."""
    if sys.platform == "darwin":
        return device, "avfoundation"
    if sys.platform == "win32":
        if device.isdigit():
            raise UserError(
                f"camera {device}: on Windows give the camera's name, e.g. "
                "--camera 'video=Integrated Camera' (ffmpeg -list_devices true -f dshow -i dummy)"
            )
        return device, "dshow"
    return (f"/dev/video{device}" if device.isdigit() else device), "v4l2"


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
