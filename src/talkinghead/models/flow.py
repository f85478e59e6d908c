"""Analytic motion from landmarks: a batched thin-plate spline (TPS) and warping with it.

The warp-and-refine generator moves each shot's own pixels (and features) onto the target's
landmarks. Its starting point needs no learning: a thin-plate spline through the 68 landmark
pairs plus fixed anchors on the frame border (which keep the background still) gives a dense
backward map "target pixel -> where to read in the shot" (Bookstein 1989; the TPS motion model of
Zhao & Zhang 2022 uses the same solve with learned points). A network then only corrects it.

Coordinates: landmarks are in pixels (x, y) with pixel ``i``'s centre at ``i`` (dlib's
convention); grids are ``grid_sample``'s normalised coordinates with ``align_corners=False``, so
pixel ``i`` of ``S`` sits at ``(2i + 1) / S - 1``. Everything is 2-D ``grid_sample`` and small
dense solves: it exports to ONNX and runs anywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Anchors per side of the frame border, placed just outside it (corners included once).
ANCHORS_PER_SIDE = 5
# Ridge on the TPS kernel, in normalised units: dlib's inner-lip points coincide when the mouth
# is closed, so a pure interpolant can be singular; this keeps the solve well posed while the
# landmarks are still matched to a small fraction of a pixel (tests/test_warp_generator.py).
TPS_REGULARISATION = 1e-6
# Kernel weights above this (in any output column) are evaluated in float64 (ThinPlateSpline).
LARGE_WEIGHT = 20.0


def pixels_to_grid(points: Tensor, size: int) -> Tensor:
    """Pixel coordinates ``[...,2]`` -> ``grid_sample`` coordinates (align_corners=False)."""
    return (2 * points + 1) / size - 1


def border_anchors(size: int, device=None, dtype=torch.float32) -> Tensor:
    """``[A,2]`` fixed points (grid coordinates) on a square just outside the frame."""
    edge = 1 + 2 / size  # one pixel outside the outermost pixel centres
    # Python numbers: no tensor to read back element by element on every render.
    step = 2 * edge / (ANCHORS_PER_SIDE - 1)
    ticks = [-edge + i * step for i in range(ANCHORS_PER_SIDE - 1)] + [edge]
    points = {(x, y) for x in ticks for y in (-edge, edge)}
    points |= {(x, y) for y in ticks for x in (-edge, edge)}
    return torch.tensor(sorted(points), device=device, dtype=dtype)


def _radial(squared_distance: Tensor) -> Tensor:
    """TPS kernel U(r) = r^2 log r^2, with U(0) = 0."""
    return squared_distance * torch.log(squared_distance.clamp_min(1e-12))


class ThinPlateSpline(NamedTuple):
    """A fitted spline: ``controls [N,C,2]`` (grid coordinates) and ``weights [N,C+3,2]``."""

    controls: Tensor
    weights: Tensor

    def __call__(self, points: Tensor) -> Tensor:
        """Map grid-coordinate points ``[N,M,2]`` -> ``[N,M,2]``, in the points' dtype.

        The solve needs float64; evaluating in float32 is 3x faster, and accurate to ~1e-4 grid
        units while the kernel weights stay small. Nearly coincident landmarks that map apart
        (a closed mouth's inner lips onto an open one) get weights in the thousands whose
        terms cancel: in float32 that put the whole map up to 0.01 grid units off (0.6 px at
        128 px) and made it depend on the order of the sums. The terms of controls with
        weights over ``LARGE_WEIGHT`` (per item) are therefore summed in float64, the rest in
        the points' dtype; an item's values do not depend on the rest of the batch.
        """
        count = self.controls.shape[1]
        kernel_weights = self.weights[:, :count]  # [N,C,D] float64
        large = kernel_weights.abs().amax(-1, keepdim=True) > LARGE_WEIGHT  # [N,C,1]
        if points.dtype == torch.float64 or not bool(large.any()):
            large = None
        else:  # those terms left to float64 below: zero weights here
            kernel_weights = kernel_weights.masked_fill(large, 0)
        weights = torch.cat([kernel_weights, self.weights[:, count:]], 1).to(points.dtype)
        controls = self.controls.to(points.dtype)
        radial = _radial(torch.cdist(points, controls).square())
        basis = torch.cat([radial, torch.ones_like(points[..., :1]), points], -1)
        mapped = basis @ weights
        if large is None:
            return mapped
        columns = large.flatten(1).any(0)  # controls with a large weight in any item
        exact = _radial(torch.cdist(points.double(), self.controls[:, columns]).square())
        exact_weights = self.weights[:, :count][:, columns].masked_fill(~large[:, columns], 0)
        return (mapped.double() + exact @ exact_weights).to(points.dtype)


def fit_tps(target_points: Tensor, source_points: Tensor, size: int) -> ThinPlateSpline:
    """The spline that maps target landmarks onto source landmarks and anchors onto themselves.

    ``target_points [N,P,2]`` and ``source_points [N,P,2]``, or ``[N,K,P,2]`` for K sources
    sharing one target: the system depends on the targets only, so it is solved once for all K
    (``weights [N,C+3,2K]``, source k in columns 2k and 2k+1). Pixels of a ``size`` px frame;
    solved in float64: a (P+A+3)^2 system (88 x 88 for 68 landmarks).
    """
    device, n = target_points.device, target_points.shape[0]
    sources = source_points if source_points.dim() == 4 else source_points[:, None]
    anchors = border_anchors(size, device, torch.float64).expand(n, -1, -1)
    controls = torch.cat([pixels_to_grid(target_points.double(), size), anchors], 1)
    values = torch.cat(
        [
            pixels_to_grid(sources.double(), size),
            anchors[:, None].expand(-1, sources.shape[1], -1, -1),
        ],
        2,
    )  # [N,K,C,2]
    values = values.permute(0, 2, 1, 3).flatten(2)  # [N,C,2K]
    count = controls.shape[1]
    kernel = _radial(torch.cdist(controls, controls).square())
    kernel = kernel + TPS_REGULARISATION * torch.eye(count, dtype=torch.float64, device=device)
    affine = torch.cat([torch.ones_like(controls[..., :1]), controls], -1)  # [N,C,3]
    system = torch.zeros(n, count + 3, count + 3, dtype=torch.float64, device=device)
    system[:, :count, :count] = kernel
    system[:, :count, count:] = affine
    system[:, count:, :count] = affine.transpose(1, 2)
    rhs = torch.cat([values, values.new_zeros(n, 3, values.shape[-1])], 1)
    return ThinPlateSpline(controls, torch.linalg.solve(system, rhs))


def tps_grid(target_points: Tensor, source_points: Tensor, size: int, out_size: int) -> Tensor:
    """Backward sampling grid: for each output pixel, where to read the shot.

    The thin-plate spline of :func:`fit_tps`, evaluated at every output pixel centre:
    ``[N,out,out,2]`` for ``source_points [N,P,2]``; ``[N,K,out,out,2]`` for K shots
    ``[N,K,P,2]`` seen from one target each (one solve and one kernel evaluation per target).
    """
    spline = fit_tps(target_points, source_points, size)
    n, device = target_points.shape[0], target_points.device
    pixels = identity_grid(out_size, device).reshape(1, -1, 2).expand(n, -1, -1)
    mapped = spline(pixels)  # [N,M,2K]
    k = mapped.shape[-1] // 2
    grids = mapped.view(n, out_size, out_size, k, 2).permute(0, 3, 1, 2, 4)
    grids = grids.to(target_points.dtype)
    return grids if source_points.dim() == 4 else grids[:, 0]


def identity_grid(size: int, device=None, dtype=torch.float32) -> Tensor:
    """``[S,S,2]`` grid that samples every pixel centre where it is (x first, as grid_sample)."""
    ticks = (2 * torch.arange(size, device=device, dtype=dtype) + 1) / size - 1
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs, ys], -1)


def resize_grid(grid: Tensor, size: int) -> Tensor:
    """A square sampling grid ``[N,H,H,2]`` resampled to ``[N,size,size,2]``.

    The displacement from the identity is interpolated, not the grid: an identity grid stays
    exactly the identity at every size (interpolating the grid itself would pull the border
    pixels inwards).
    """
    if grid.shape[1] == size:
        return grid
    n, h = grid.shape[:2]
    identity = identity_grid(h, grid.device, grid.dtype)
    # Each coordinate as a one-channel image (the same values): contiguous NCHW, as bilinear
    # upsampling of a 2-channel channels-last view took 4x as long; and in ONNX the Reshape
    # keeps ONNX Runtime from moving the Resize to a channels-last layout (2.4-2.9x as long).
    displacement = (grid - identity).permute(0, 3, 1, 2).reshape(n * 2, 1, h, h)
    resized = F.interpolate(displacement, size=(size, size), mode="bilinear")
    resized = resized.view(n, 2, size, size).permute(0, 2, 3, 1)
    return resized + identity_grid(size, grid.device, grid.dtype)


def warp(features: Tensor, grid: Tensor) -> Tensor:
    """Sample ``features [N,C,H,W]`` at ``grid [N,h,w,2]`` (bilinear, border padding)."""
    grid = resize_grid(grid, features.shape[-1]).to(features.dtype)
    return F.grid_sample(
        features, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
