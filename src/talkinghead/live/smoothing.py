"""Causal smoothing of live landmarks: the One Euro filter (Casiez et al., CHI 2012).

``prep`` and ``animate`` smooth with a centred moving average, which waits ``window // 2``
frames for the future; live there is no future, and a plain moving average lags a moving head.
The One Euro filter is a low-pass filter whose cut-off rises with speed: a still face is smoothed
as strongly as a ``window``-frame average would (its jitter hidden), a moving one is followed
with little lag.
"""

from __future__ import annotations

import math

import numpy as np

NOMINAL_FPS = 30.0  # frame rate at which a still face is smoothed like a `window`-frame average
SPEED_GAIN = 20.0  # beta: Hz of extra cut-off per face size per second of motion
# (a head turning at half a face a second is followed with a ~12 Hz cut-off: ~1 frame of lag)
DERIVATIVE_CUTOFF = 1.0  # Hz, the filter on the speed itself (the paper's default)


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class LandmarkFilter:
    """One Euro filter on landmarks [68,2] (pixels). ``window`` 1 passes them through."""

    def __init__(self, window: int = 5):
        self.window = max(int(window), 1)
        # A still face: the exponential average with the weight of a `window`-frame average,
        # alpha = 2 / (window + 1), at NOMINAL_FPS; as a cut-off frequency in Hz.
        alpha = 2.0 / (self.window + 1)
        self.min_cutoff = NOMINAL_FPS / (2 * math.pi * (1.0 / alpha - 1.0)) if alpha < 1 else 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the past (the face was lost: the next one starts afresh)."""
        self._value: np.ndarray | None = None
        self._speed = 0.0
        self._time = 0.0

    def __call__(self, landmarks: np.ndarray, time: float) -> np.ndarray:
        """The smoothed landmarks at ``time`` (seconds, any monotonic clock)."""
        landmarks = np.asarray(landmarks, np.float64)
        if self.window == 1 or self._value is None:
            self._value, self._time = landmarks, time
            return landmarks
        dt = time - self._time if time > self._time else 1.0 / NOMINAL_FPS
        # Speed in face sizes per second, so the gain does not depend on the camera's size.
        size = float(np.ptp(landmarks, axis=0).max()) or 1.0
        speed = float(np.abs(landmarks - self._value).mean()) / size / dt
        self._speed += _alpha(DERIVATIVE_CUTOFF, dt) * (speed - self._speed)
        alpha = _alpha(self.min_cutoff + SPEED_GAIN * self._speed, dt)
        self._value = self._value + alpha * (landmarks - self._value)
        self._time = time
        return self._value
