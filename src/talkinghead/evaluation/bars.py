"""The bars a model must clear (issue 14), checked on the whole held-out set.

Every bar reads the 'all' rows of the summary (the mean over the held-out people) at T = 8 with
the fine-tuned model (feed-forward when fine-tuning was not run), and gives the measured value,
the threshold it is held to, and pass/fail; None (not measured) when a row it needs is missing,
e.g. cross-person bars with a single video or the T = 1 comparison without T = 1.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

ALL = "all"  # the video name of an aggregate row
BAR_SHOTS, FEW_SHOTS = 8, 1  # T of the bars, and the T it must beat ("more shots help")
FINE_TUNED, FEED_FORWARD = "model (fine-tuned)", "model (feed-forward)"
WARP = "warp"
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def main_shots(shots: Iterable[int]) -> int:
    """The T of the bars and the frames picture: 8 when evaluated, else the largest."""
    shots = set(shots)
    return BAR_SHOTS if BAR_SHOTS in shots else max(shots)


def check_bars(summary: list[dict]) -> list[dict]:
    """One row per bar: its name, where it was read (protocol, method, T), the value, the
    comparison, the threshold, and passed (None: not measured)."""
    reader = _Reader(summary)
    return _against_warp(reader) + _more_shots(reader) + _cross_and_motion(reader)


class _Reader:
    """The 'all' rows by (protocol, method, T), the model variant and the T the bars use."""

    def __init__(self, summary: list[dict]):
        self.table = {(r["protocol"], r["method"], r["T"]): r for r in summary if r["video"] == ALL}
        self.methods = {method for _, method, _ in self.table}
        self.ours = FINE_TUNED if FINE_TUNED in self.methods else FEED_FORWARD
        self.shots = self._shots("self")
        self.cross_shots = self._shots("cross")

    def _shots(self, protocol: str) -> int:
        found = [t for p, m, t in self.table if p == protocol and m == self.ours]
        return main_shots(found) if found else BAR_SHOTS

    def get(self, metric: str, method: str | None = None, protocol: str = "self", t=None):
        t = t or (self.shots if protocol == "self" else self.cross_shots)
        return self.table.get((protocol, method or self.ours, t), {}).get(metric)

    def bar(self, name, measured, op, threshold, method=None, protocol="self") -> dict:
        """A bar's row. A value that is missing because dlib found no face on any of the
        method's frames fails (there is nothing to measure on); otherwise it is not measured."""
        passed, note = None, None
        if measured is not None and threshold is not None:
            passed = bool(OPERATORS[op](measured, threshold))
        elif measured is None and self.get("landmark_misses", method, protocol) == 1.0:
            passed, note = False, "no face found on any frame"
        t = self.shots if protocol == "self" else self.cross_shots
        return {
            "bar": name,
            **{"protocol": protocol, "method": method or self.ours, "T": t},
            **{"value": measured, "op": op, "threshold": threshold, "passed": passed},
            "note": note,
        }


def _against_warp(r: _Reader) -> list[dict]:
    """Self-reenactment against the piecewise-affine warp, and dlib finding the face."""
    warp_error, warp_distance = r.get("landmark_error", WARP), r.get("identity_distance", WARP)
    misses = r.get("landmark_misses")
    return [
        r.bar("SSIM above the warp's", r.get("ssim"), ">", r.get("ssim", WARP)),
        r.bar("PSNR above the warp's", r.get("psnr"), ">", r.get("psnr", WARP)),
        r.bar(
            "landmark error at most 1.25x the warp's",
            r.get("landmark_error"),
            "<=",
            None if warp_error is None else 1.25 * warp_error,
        ),
        r.bar("identity distance below 0.6", r.get("identity_distance"), "<", 0.6),
        r.bar(
            "identity distance at most the warp's + 0.05",
            r.get("identity_distance"),
            "<=",
            None if warp_distance is None else warp_distance + 0.05,
        ),
        r.bar(
            "face found on at least 95% of frames",
            None if misses is None else 1.0 - misses,
            ">=",
            0.95,
        ),
    ]


def _more_shots(r: _Reader) -> list[dict]:
    """T = 8 beats T = 1 on SSIM and identity distance, feed-forward and fine-tuned."""
    bars = []
    for method in (m for m in (FEED_FORWARD, FINE_TUNED) if m in r.methods):
        for metric, op in (("ssim", ">"), ("identity_distance", "<")):
            few = r.get(metric, method, t=FEW_SHOTS) if r.shots != FEW_SHOTS else None
            variant = "fine-tuned" if method == FINE_TUNED else "feed-forward"
            name = f"T={r.shots} beats T={FEW_SHOTS} on {metric}, {variant}"
            bars.append(r.bar(name, r.get(metric, method), op, few, method))
    return bars


def _cross_and_motion(r: _Reader) -> list[dict]:
    """Person A driven by held-out person B; jitter on consecutive self-reenacted frames."""
    return [
        r.bar(
            "cross-person: identity distance to A below 0.6 on at least 90% of frames",
            r.get("same_person_fraction", protocol="cross"),
            ">=",
            0.9,
            protocol="cross",
        ),
        r.bar(
            "cross-person: identity distance to A below that to B",
            r.get("identity_distance", protocol="cross"),
            "<",
            r.get("driver_distance", protocol="cross"),
            protocol="cross",
        ),
        r.bar(
            "cross-person: mouth-opening correlation with the driver at least 0.7",
            r.get("mouth_correlation", protocol="cross"),
            ">=",
            0.7,
            protocol="cross",
        ),
        r.bar(
            "jitter at most 1.5x the driver's (consecutive frames)",
            r.get("jitter_ratio"),
            "<=",
            1.5,
        ),
    ]
