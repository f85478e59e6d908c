"""The visible "SYNTHETIC" label burnt into every live frame (after the invisible watermark).

A dark band across the top with white capitals: readable in a preview window, a video call or a
recording, on any face. Drawn once per frame size with PIL and blended in with numpy (~0.1 ms).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT = "SYNTHETIC"
BAND_FRACTION = 0.11  # band height / frame height
BAND_OPACITY = 0.75  # the face stays visible through the band


@functools.cache
def _overlay(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(colour [h,W,3] float32, alpha [h,W,1] float32) of the band for frames of this size."""
    band = label_height(height)
    image = Image.new("RGBA", (width, band), (0, 0, 0, round(255 * BAND_OPACITY)))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(9, round(band * 0.72)))
    left, top, right, bottom = draw.textbbox((0, 0), TEXT, font=font)
    origin = ((width - (right - left)) / 2 - left, (band - (bottom - top)) / 2 - top)
    draw.text(origin, TEXT, fill=(255, 255, 255, 255), font=font)
    pixels = np.asarray(image, np.float32)
    return pixels[..., :3], pixels[..., 3:] / 255.0


def burn_label(image: np.ndarray) -> np.ndarray:
    """A copy of RGB uint8 ``image`` [H,W,3] with the label band across its top."""
    colour, alpha = _overlay(*image.shape[:2])
    out = image.copy()
    top = out[: len(colour)].astype(np.float32)
    out[: len(colour)] = np.rint(top + alpha * (colour - top)).astype(np.uint8)
    return out


def label_height(height: int) -> int:
    """Rows the band covers in a frame of ``height`` rows."""
    return max(12, round(height * BAND_FRACTION))
