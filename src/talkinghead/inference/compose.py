"""Output layouts: paste the rendered face back into the photo; driver | landmarks | result."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from talkinghead.landmarks import geometry


def face_mask(landmarks: np.ndarray, size: int, feather: float = 0.06) -> np.ndarray:
    """Soft mask [S,S] in [0,1]: the face's convex region (jaw + brows raised), feathered."""
    hull = np.concatenate([landmarks[:17], landmarks[26:16:-1]])
    # Raise the brow line by a fifth of the face height so the forehead is included.
    height = landmarks[:, 1].max() - landmarks[:, 1].min()
    hull[17:, 1] -= 0.2 * height
    mask = Image.new("L", (size, size))
    ImageDraw.Draw(mask).polygon([tuple(p) for p in hull.tolist()], fill=255)
    blurred = mask.filter(ImageFilter.GaussianBlur(radius=max(1.0, feather * size)))
    return np.asarray(blurred, dtype=np.float32) / 255.0


def paste_back(
    photo: np.ndarray, face: np.ndarray, box: np.ndarray, landmarks: np.ndarray
) -> np.ndarray:
    """Blend a rendered crop ``face`` [S,S,3] into ``photo`` at the crop ``box``.

    ``landmarks`` [68,2] (crop pixels) shape the feathered mask; pixels outside it keep the
    photo's values exactly.
    """
    size = face.shape[0]
    mask = face_mask(landmarks, size)
    transform = geometry.crop_transform(box, size)
    x0, y0, x1, y1 = box
    left, top = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    right, bottom = min(int(np.ceil(x1)), photo.shape[1]), min(int(np.ceil(y1)), photo.shape[0])
    if right <= left or bottom <= top:
        return photo.copy()
    # Sample the crop (and mask) at the photo's pixel centres inside the box.
    ys, xs = np.mgrid[top:bottom, left:right]
    crop_points = transform.apply(np.stack([xs + 0.5, ys + 0.5], -1)) - 0.5
    cx = np.clip(np.rint(crop_points[..., 0]).astype(int), 0, size - 1)
    cy = np.clip(np.rint(crop_points[..., 1]).astype(int), 0, size - 1)
    inside = (crop_points[..., 0] >= -0.5) & (crop_points[..., 0] <= size - 0.5)
    inside &= (crop_points[..., 1] >= -0.5) & (crop_points[..., 1] <= size - 0.5)
    alpha = (mask[cy, cx] * inside)[..., None]
    out = photo.copy()
    region = out[top:bottom, left:right].astype(np.float32)
    blended = alpha * face[cy, cx].astype(np.float32) + (1 - alpha) * region
    out[top:bottom, left:right] = np.where(alpha > 0, np.rint(blended), region).astype(np.uint8)
    return out


def side_by_side(*panels: np.ndarray, height: int | None = None) -> np.ndarray:
    """Panels [H,W,3] resized to one even height, side by side, width rounded to even."""
    height = height or max(p.shape[0] for p in panels)
    height += height % 2
    resized = [
        np.asarray(
            Image.fromarray(p).resize(
                (max(2, round(p.shape[1] * height / p.shape[0])), height), Image.Resampling.BILINEAR
            )
        )
        for p in panels
    ]
    out = np.concatenate(resized, axis=1)
    return out[:, : out.shape[1] - out.shape[1] % 2]
