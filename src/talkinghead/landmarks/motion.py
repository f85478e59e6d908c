"""Moving landmarks between faces: similarity alignment and relative-motion retargeting.

The paper drives the generator with the driver's raw landmarks, which carries the driver's face
shape into the result (its known weakness for cross-identity driving). Relative motion instead
applies the driver's *changes* (from a reference frame) to the source person's own landmarks,
scaled and rotated into the source face's frame, as LivePortrait and first-order-model do.
"""

from __future__ import annotations

import numpy as np


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) with ``target ~= source @ matrix.T + offset``.

    Returns ``matrix`` [2,2] (scale times rotation, no reflection) and ``offset`` [2].
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s / len(s))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float((sigma * np.diag(sign)).sum() / max(s.var(0).sum(), 1e-12))
    matrix = scale * rotation
    return matrix, mu_t - mu_s @ matrix.T


def retarget_relative(source: np.ndarray, driver: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Source landmarks [68,2] moved as the driver [T,68,2] moves away from ``reference`` [68,2].

    ``result[t] = source + M (driver[t] - reference)``, with M the similarity part that maps
    the reference face onto the source face, so the reference frame gives exactly ``source``.
    """
    matrix, _ = similarity_fit(reference, source)
    return source[None] + (np.asarray(driver, np.float64) - reference[None]) @ matrix.T
