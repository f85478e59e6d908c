"""Piecewise-affine image warping driven by landmarks (a classic, non-learned reenactment).

The 68 landmarks plus fixed anchors on the image border are triangulated (Delaunay) in the
*output* geometry; every output pixel finds its triangle, its barycentric coordinates there, and
the same barycentric point of the source triangle, which is sampled bilinearly. The border
anchors keep the background in place while the face deforms.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay


def border_anchors(height: int, width: int) -> np.ndarray:
    """Eight fixed points: the corners and edge midpoints, just outside the image."""
    xs, ys = (-1.0, (width - 1) / 2, float(width)), (-1.0, (height - 1) / 2, float(height))
    return np.array([(x, y) for x in xs for y in ys if (x, y) != (xs[1], ys[1])])


def piecewise_affine_warp(
    image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray
) -> np.ndarray:
    """Warp ``image`` [H,W,C] so that ``source_points`` [P,2] (x, y) move to ``target_points``.

    The output has the input's size and dtype.
    """
    height, width = image.shape[:2]
    anchors = border_anchors(height, width)
    source = np.concatenate([np.asarray(source_points, np.float64), anchors])
    target = np.concatenate([np.asarray(target_points, np.float64), anchors])
    triangulation = Delaunay(target)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    simplex = triangulation.find_simplex(pixels)
    simplex = np.where(simplex < 0, 0, simplex)  # anchors enclose the frame; guard rounding
    transform = triangulation.transform[simplex]
    partial = np.einsum("nij,nj->ni", transform[:, :2], pixels - transform[:, 2])
    barycentric = np.concatenate([partial, 1 - partial.sum(1, keepdims=True)], 1)
    corners = source[triangulation.simplices[simplex]]  # [N,3,2]
    mapped = np.einsum("ni,nij->nj", barycentric, corners)
    coords = [mapped[:, 1].reshape(height, width), mapped[:, 0].reshape(height, width)]
    channels = [
        ndimage.map_coordinates(image[..., c].astype(np.float32), coords, order=1, mode="nearest")
        for c in range(image.shape[2])
    ]
    out = np.stack(channels, -1)
    if np.issubdtype(image.dtype, np.integer):
        out = np.clip(np.rint(out), 0, np.iinfo(image.dtype).max)
    return out.astype(image.dtype)
