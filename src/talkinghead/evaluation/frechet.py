"""Frechet distances between feature distributions: FID (with the FID Inception network only)
and a Frechet distance on face-identity descriptors (named as such, never called FID).
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.data.episodes import to_tensor


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) for two Gaussians (Heusel et al. 2017).

    Tr sqrt(S1 S2) is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix sqrt(S1) S2 sqrt(S1) (same spectrum), which stays real and stable when the
    covariances are singular (fewer samples than dimensions, as with 32 hold-out frames).
    """
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    values, vectors = np.linalg.eigh(np.asarray(sigma1, np.float64))
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root @ np.asarray(sigma2, np.float64) @ root)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


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
