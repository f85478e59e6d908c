"""Preprocessing throughput on the real sample clip: frames/s per core, per stage and end to end.

    python bench/prep.py [--reps 5] [--size 256]

Stages (per kept frame, one process = one core): decode (PyAV), detect (dlib HOG, amortised over
``detect_every``), landmarks (dlib 68-point), crop (resample to the output size), write (JPEG
encode + file). End to end runs ``run_prep`` on copies of the clip with one worker. The VoxCeleb2
projection assumes ~200M frames at the measured end-to-end rate on 16 such cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from common import median_seconds, print_table, save_results

from talkinghead import assets, video
from talkinghead.config.prep import PrepConfig
from talkinghead.data import store, tracks
from talkinghead.data.preprocess import run_prep
from talkinghead.landmarks import detect

VOXCELEB2_FRAMES = 200e6


def stage_times(frames: np.ndarray, config: PrepConfig, reps: int) -> dict[str, float]:
    """Median seconds per frame of each stage."""
    clip = assets.sample_clip_path()
    decode = median_seconds(lambda: list(video.read_frames(clip)), reps) / len(frames)
    detected = [detect.detect_faces(f) for f in frames]
    frames = np.stack([f for f, d in zip(frames, detected) if d])
    faces = [d[0].box for d in detected if d]
    n = len(frames)
    landmarks = [detect.predict_landmarks(f, b) for f, b in zip(frames, faces)]
    box = np.array([0.0, 0.0, 140.0, 140.0])
    crops = [tracks.crop_image(f, box, config.crop_size) for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.thc"
        lms = np.stack(landmarks).astype(np.float32)
        write = lambda: store.write_clip(out, np.stack(crops), lms, {}, config.jpeg_quality)  # noqa: E731
        times = {
            "decode": decode,
            "detect": median_seconds(lambda: [detect.detect_faces(f) for f in frames], reps) / n,
            "landmarks": median_seconds(
                lambda: [detect.predict_landmarks(f, b) for f, b in zip(frames, faces)], reps
            )
            / n,
            "crop": median_seconds(
                lambda: [tracks.crop_image(f, box, config.crop_size) for f in frames], reps
            )
            / n,
            "write": median_seconds(write, reps) / n,
        }
    times["detect (amortised)"] = times.pop("detect") / config.detect_every
    return times


def end_to_end(config: PrepConfig, copies: int) -> tuple[float, int]:
    """Frames per second of a whole ``run_prep`` (one worker) over ``copies`` of the clip."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for i in range(copies):
            os.symlink(assets.sample_clip_path(), folder / f"copy{i}.mp4")
        summary = run_prep([folder], Path(tmp) / "out", config, progress=False)
        return summary.num_frames / summary.seconds, summary.num_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    config = PrepConfig(crop_size=args.size)
    frames = np.stack(list(video.read_frames(assets.sample_clip_path())))
    times = stage_times(frames, config, args.reps)
    rate, num_frames = end_to_end(config, args.copies)
    total = sum(times.values())
    times |= {"sum of stages": total, f"end to end ({num_frames} frames)": 1 / rate}
    # Each figure also as a ratio to decoding, measured in the same run (machines are noisy).
    rows = [
        {"stage": k, "ms/frame": v * 1e3, "frames/s": 1 / v, "x decode": v / times["decode"]}
        for k, v in times.items()
    ]
    print(
        f"sample: {frames.shape[2]}x{frames.shape[1]} clip, output {args.size}px, "
        f"detect_every={config.detect_every}, one core"
    )
    print_table(rows, ["stage", "ms/frame", "frames/s", "x decode"])
    hours = VOXCELEB2_FRAMES / (rate * 16) / 3600
    print(
        f"projected VoxCeleb2 (~200M frames) on one 16-core machine: {hours:.1f} h "
        f"(target: >= 100 frames/s per core, < 24 h)"
    )
    save_results(
        "prep",
        {
            "size": args.size,
            "stages": rows,
            "frames_per_s_per_core": rate,
            "voxceleb2_hours_16_cores": hours,
        },
    )


if __name__ == "__main__":
    main()
