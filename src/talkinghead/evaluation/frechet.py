"""Frechet distances between feature distributions: FID (with the FID Inception network only)
and a Frechet distance on face-identity descriptors (named as such, never called FID).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from talkinghead.data.episodes import to_tensor


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) for two Gaussians (Heusel et al. 2017).

    A singular product (few samples, many dimensions) gets a small diagonal offset, as the
    reference implementation does; imaginary parts from round-off are dropped.
    """
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features [N,D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


@torch.no_grad()
def inception_features(frames: np.ndarray, network, batch_size: int = 16) -> np.ndarray:
    """2048-d FID features of uint8 frames [N,H,W,3]."""
    out = [
        network(to_tensor(frames[i : i + batch_size])).numpy()
        for i in range(0, len(frames), batch_size)
    ]
    return np.concatenate(out)


def fid(real: np.ndarray, fake: np.ndarray, network) -> float:
    """FID between two sets of uint8 frames, with the FID Inception network."""
    return frechet_distance(
        *statistics(inception_features(real, network)),
        *statistics(inception_features(fake, network)),
    )
