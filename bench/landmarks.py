"""What tracking between detections costs in landmark accuracy, and what it saves in time.

    .venv/bin/python bench/landmarks.py [CLIP ...] [--every 1 5 10] [--frames 150]

The driver's landmarks come from dlib: the HOG detector every ``detect_every`` frames (as
``animate`` and ``prep`` do, default 5) and the 68-point predictor started from the previous
frame's landmarks in between. Reference: the detector on every frame. Error: per frame, the mean
distance of the 68 points to the reference's, in units of the inter-ocular distance (outer eye
corners, the 300-W normalisation); reported as mean, 95th percentile and max over frames, raw
(no temporal smoothing), beside the milliseconds per frame. Clips: the sample clip and, by
default, the people held out of training (if their clips are on this machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
from common import cpu_line, print_table, save_results

from talkinghead import assets, video
from talkinghead.config.prep import PrepConfig
from talkinghead.inference.driving import FaceFollower

EVAL_CLIPS = Path("/work/data/eval-clips")


def follow(
    frames: list[np.ndarray], every: int, near: bool
) -> tuple[list[np.ndarray | None], float]:
    """Raw landmarks per frame with the detector every ``every`` frames (on the whole frame, or
    ``near`` the followed face), and ms per frame."""
    follower = FaceFollower(dataclasses.replace(PrepConfig(), detect_every=every), near)
    start = time.perf_counter()
    found = [follower.step(frame) for frame in frames]
    return found, 1e3 * (time.perf_counter() - start) / len(frames)


def errors(found: list, reference: list) -> np.ndarray:
    """Per-frame error in inter-ocular units, where both found a face."""
    out = []
    for points, truth in zip(found, reference):
        if points is None or truth is None:
            continue
        interocular = np.linalg.norm(truth[36] - truth[45])
        out.append(np.linalg.norm(points - truth, axis=1).mean() / interocular)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--every", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--frames", type=int, default=150, help="frames per clip")
    parser.add_argument("--reps", type=int, default=3, help="timing repetitions (median)")
    args = parser.parse_args()
    clips = args.clips or [
        assets.sample_clip_path(),
        *sorted(EVAL_CLIPS.glob("*.mp4") if EVAL_CLIPS.is_dir() else []),
    ]
    print(cpu_line())
    rows = []
    for clip in clips:
        frames = [f for _, f in zip(range(args.frames), video.read_frames(clip))]
        runs = {}
        configs = [(1, False)] + [(e, near) for e in args.every if e > 1 for near in (False, True)]
        for every, near in configs:
            timed = [follow(frames, every, near) for _ in range(args.reps)]
            runs[every, near] = (timed[0][0], statistics.median(ms for _, ms in timed))
        reference = runs[1, False][0]
        for (every, near), (found, ms) in runs.items():
            error = errors(found, reference)
            rows.append(
                {
                    "clip": clip.name,
                    "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                    "detect_every": every,
                    "re-detect": "near" if near else "frame",
                    "ms/frame": ms,
                    "x per-frame detection": ms / runs[1, False][1],
                    "frames": len(error),
                    "error mean": float(error.mean()) if len(error) else None,
                    "error p95": float(np.percentile(error, 95)) if len(error) else None,
                    "error max": float(error.max()) if len(error) else None,
                }
            )
            print(f"{clip.name} every {every} {near=}: {ms:.1f} ms/frame", flush=True)
    print("\nerror: mean landmark distance to per-frame detection / inter-ocular distance")
    print_table(rows, list(rows[0]))
    save_results("landmarks", {"runs": rows})


if __name__ == "__main__":
    main()
