"""Motion measures on landmark series [N,68,2] (iBUG points, NaN rows where no face was found):
temporal jitter and mouth opening, compared between a result and its driver.

Both sides of a comparison are measured the same way: landmarks that dlib finds on the result
frames against landmarks that dlib finds on the driver's real frames, so the detector's own
noise appears on both sides and the ratio of the two is about 1 for a perfect copy.
"""

from __future__ import annotations

import numpy as np

INTER_OCULAR = (36, 45)  # outer eye corners (iBUG)
# Inner-lip pairs facing each other across the mouth (iBUG 61-67, 62-66, 63-65).
INNER_LIPS = ((61, 67), (62, 66), (63, 65))
MIN_FRAMES = 3  # fewer valid frames than this: no jitter, no correlation
# A driver whose mouth opening varies less than this (std over the run, in inter-ocular
# distances; dlib's own noise is ~0.005) does not speak: its correlation would be noise.
MIN_MOUTH_MOTION = 0.01


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners of landmarks [...,68,2] -> [...]."""
    landmarks = np.asarray(landmarks, np.float64)
    return np.linalg.norm(
        landmarks[..., INTER_OCULAR[0], :] - landmarks[..., INTER_OCULAR[1], :], axis=-1
    )


def landmark_jitter(series: np.ndarray) -> float | None:
    """Mean over frames of the mean (over the 68 points) norm of the second difference
    ``x[t+1] - 2 x[t] + x[t-1]``, divided by the series' mean inter-ocular distance.

    The second difference is zero for steady motion (a head turning at constant speed) and
    large for frame-to-frame shaking: an oscillation of amplitude ``a`` gives ``4 a``. Only
    triples of consecutive frames with a face on all three count; None below ``MIN_FRAMES``.
    """
    series = np.asarray(series, np.float64)
    if len(series) < MIN_FRAMES:
        return None
    second = series[2:] - 2 * series[1:-1] + series[:-2]
    per_frame = np.linalg.norm(second, axis=-1).mean(axis=-1)  # NaN where any frame missed
    valid = per_frame[np.isfinite(per_frame)]
    scale = np.nanmean(inter_ocular(series)) if np.isfinite(series).any() else np.nan
    if len(valid) == 0 or not scale > 0:
        return None
    return float(valid.mean() / scale)


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``; None when either is missing or the reference is 0."""
    if value is None or reference is None or reference <= 0:
        return None
    return float(value / reference)


def mouth_opening(series: np.ndarray) -> np.ndarray:
    """Inner-lip gap of each frame [N] (mean of three facing pairs) over its inter-ocular
    distance; NaN where no face was found."""
    series = np.asarray(series, np.float64)
    gaps = [np.linalg.norm(series[:, a] - series[:, b], axis=-1) for a, b in INNER_LIPS]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(gaps, axis=0) / inter_ocular(series)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two series [N] over the frames where both are finite; None with
    fewer than ``MIN_FRAMES`` such frames or when either is constant there."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < MIN_FRAMES:
        return None
    a, b = a[both] - a[both].mean(), b[both] - b[both].mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else None


def motion_scores(result: np.ndarray, driver: np.ndarray) -> dict:
    """Jitter of a result's landmark series against its driver's (same frames, consecutive),
    and the correlation of their mouth openings (None when the driver's mouth hardly moves)."""
    jitter, driver_jitter = landmark_jitter(result), landmark_jitter(driver)
    opening = mouth_opening(driver)
    speaks = np.isfinite(opening).sum() >= MIN_FRAMES and np.nanstd(opening) >= MIN_MOUTH_MOTION
    return {
        "jitter": jitter,
        "driver_jitter": driver_jitter,
        "jitter_ratio": ratio(jitter, driver_jitter),
        "mouth_correlation": correlation(mouth_opening(result), opening) if speaks else None,
    }
