"""Non-learned baselines, scored by the same code as the model (a model must beat these).

- nearest shot: the source shot whose landmarks are closest to the target's, copied as is.
- warp: that shot warped piecewise-affinely onto the target landmarks (classic reenactment).
"""

from __future__ import annotations

import numpy as np

from talkinghead.landmarks.warp import piecewise_affine_warp


def _normalised(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with position and scale removed, so 'closest' means closest pose/expression."""
    centred = landmarks - landmarks.mean(axis=-2, keepdims=True)
    return centred / np.linalg.norm(centred, axis=(-2, -1), keepdims=True)


def nearest_shot(shot_landmarks: np.ndarray, target: np.ndarray) -> int:
    """Index of the shot [T,68,2] whose normalised landmarks are closest to ``target`` [68,2]."""
    distances = np.linalg.norm(_normalised(shot_landmarks) - _normalised(target), axis=(-2, -1))
    return int(distances.argmin())


def copy_nearest(shots: np.ndarray, shot_landmarks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Frames [N,S,S,3]: for each target, the nearest shot unchanged."""
    return np.stack([shots[nearest_shot(shot_landmarks, t)] for t in targets])


def warp_nearest(shots: np.ndarray, shot_landmarks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Frames [N,S,S,3]: for each target, the nearest shot warped onto the target landmarks."""
    out = []
    for target in targets:
        index = nearest_shot(shot_landmarks, target)
        out.append(piecewise_affine_warp(shots[index], shot_landmarks[index], target))
    return np.stack(out)
