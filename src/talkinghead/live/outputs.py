"""Where live frames go: a preview window, a virtual camera, a recording.

Each is a context manager with ``show(image, status)``/``send``/``write``; closing them (also on
Ctrl-C) releases the window, the virtual camera and the file. The preview uses tkinter when it
can open a window (no extra dependency); the virtual camera needs the ``live`` extra.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from talkinghead.errors import UserError
from talkinghead.inference.jobs import finish_output
from talkinghead.provenance import OutputMark
from talkinghead.video import VideoWriter


class Preview:
    """A tkinter window showing each frame (with the label burnt in) and a status line."""

    def __init__(self, title: str):
        import tkinter

        from PIL import ImageTk

        self._tk, self._image_tk = tkinter, ImageTk
        self.title, self.closed = title, False
        self.root = tkinter.Tk()  # TclError without a display: see open_preview
        self.root.title(title)
        self.root.protocol("WM_DELETE_WINDOW", self._on_close)
        self.picture = tkinter.Label(self.root, borderwidth=0, highlightthickness=0)
        self.picture.pack()
        self.status = tkinter.Label(self.root, font=("TkFixedFont", 10), anchor="w")
        self.status.pack(fill="x")
        self._photo = None

    def _on_close(self) -> None:
        self.closed = True

    def show(self, image: np.ndarray, status: str) -> None:
        from PIL import Image

        if self.closed:
            return
        self._photo = self._image_tk.PhotoImage(Image.fromarray(image))
        self.picture.configure(image=self._photo)
        self.status.configure(text=status, wraplength=image.shape[1], justify="left")
        self.root.title(f"{self.title}: {status}")
        self.pump()

    def pump(self) -> None:
        """Handle window events (call often: the window has no event loop of its own)."""
        if not self.closed:
            self.root.update()

    def close(self) -> None:
        with contextlib.suppress(self._tk.TclError):  # already gone with the display
            self.root.destroy()

    def __enter__(self) -> Preview:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_preview(title: str) -> tuple[Preview | None, str | None]:
    """The preview window, or (None, why not) when no window can be opened here."""
    try:
        return Preview(title), None
    except ImportError:
        return None, "no preview window: tkinter is not installed (running as --no-window)"
    except Exception as exc:  # tkinter.TclError: no display
        reason = str(exc).strip().splitlines()[0]
        return None, f"no preview window ({reason}); running as --no-window"


class VirtualCamera:
    """A virtual camera other apps can pick (pyvirtualcam: v4l2loopback, OBS, Unity Capture)."""

    def __init__(self, size: int, fps: float):
        try:
            import pyvirtualcam
        except ImportError:
            raise UserError(
                "--virtual-camera needs pyvirtualcam: pip install 'talkinghead[live]'"
            ) from None
        try:
            self.camera = pyvirtualcam.Camera(
                size, size, fps, fmt=pyvirtualcam.PixelFormat.RGB, print_fps=False
            )
        except RuntimeError as exc:
            raise UserError(f"virtual camera: {str(exc).strip().splitlines()[0]}") from None
        self.device, self.closed = self.camera.device, False

    def send(self, image: np.ndarray) -> None:
        self.camera.send(np.ascontiguousarray(image))

    def close(self) -> None:
        if not self.closed:
            self.camera.close()
            self.closed = True

    def __enter__(self) -> VirtualCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Recording:
    """The shown frames as an H.264 video at the source's rate, in real time: a frame shown
    while the camera delivered n frames is written n times. Tagged and signed (C2PA) when
    closed; interrupted, the part recorded so far is kept and labelled too."""

    def __init__(self, path: Path, fps: float, mark: OutputMark):
        self.path, self.mark, self.note, self.written = path, mark, "", False
        self.writer = VideoWriter(path, fps, metadata=mark.tags())
        self._last_index: int | None = None

    def write(self, image: np.ndarray, index: int) -> None:
        repeat = 1 if self._last_index is None else max(index - self._last_index, 1)
        self._last_index = index
        for _ in range(min(repeat, 300)):  # a stalled camera does not fill the disk
            self.writer.write(image)

    def close(self) -> None:
        if self._last_index is None:
            self.writer.abort()
            self.note = f"{self.path}: not written (no frame was shown)"
            return
        self.writer.close()
        self.note, self.written = finish_output(self.mark, self.path), True

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
