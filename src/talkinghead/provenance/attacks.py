"""What a re-upload does to a video or picture, for the robustness tests and benchmark.

Each attack goes through the real codecs (H.264 via :class:`~talkinghead.video.VideoWriter`,
JPEG via Pillow), as a sharing site would re-encode the file.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead import video


def reencode(
    frames: list[np.ndarray],
    fps: float = 30.0,
    crf: int = 23,
    scale: float = 1.0,
    border: float = 0.0,
    out_fps: float | None = None,
) -> list[np.ndarray]:
    """Crop ``border`` (fraction of each side), resize by ``scale``, drop frames to
    ``out_fps``, then H.264-encode at ``crf`` and decode: RGB uint8 frames."""
    height, width = frames[0].shape[:2]
    top, left = round(border * height), round(border * width)
    if out_fps is not None and out_fps < fps:
        keep = np.floor(np.arange(0, len(frames), fps / out_fps)).astype(int)
        frames = [frames[i] for i in keep]
    size = (round((width - 2 * left) * scale) // 2 * 2, round((height - 2 * top) * scale) // 2 * 2)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "attacked.mp4"
        with video.VideoWriter(path, out_fps or fps, crf=crf) as writer:
            for frame in frames:
                cropped = Image.fromarray(frame[top : height - top, left : width - left])
                writer.write(np.asarray(cropped.resize(size, Image.BICUBIC)))
        return list(video.read_frames(path))


def jpeg(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    """``frame`` saved as a JPEG of this quality and decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


# The targets of the issue: each applied to our H.264 output on its own.
VIDEO_ATTACKS = {
    "h264 crf28": dict(crf=28),
    "half size": dict(scale=0.5),
    "crop 10% border": dict(border=0.1),
    "15 fps": dict(out_fps=15.0),
}
