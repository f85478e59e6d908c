"""End-to-end animation speed: ``animate --stream`` on the real sample clip, per preset.

    .venv/bin/python bench/animate.py [--presets tiny small-128 paper-256] [--reps 3]

Stages per frame: decode (PyAV), landmarks (dlib detect every 5 frames + track), render
(rasterise + G), compose, mark (watermark; the file's tags and C2PA manifest), encode (H.264).
Weights are random (speed does not depend on them), the person is the astronaut photo, the
driver the 120-frame carphone clip. Reported: medians over reps, and each configuration's frame
rate as a ratio of plain decoding measured in the same run; "marking +%" is the time with
provenance marking over the time without, in alternating reps. Targets (issues): small-128 >= 25
frames/s end to end on 2 CPU cores; marking adds <= 10%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import cpu_line, print_table, save_results

from talkinghead import assets, video
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.device import resolve_precision
from talkinghead.inference import jobs
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.inference.render import AnimateOptions
from talkinghead.models import build_models
from talkinghead.provenance import MarkingOptions

STAGES = ("decode", "landmarks", "render", "compose", "mark", "encode")


def decode_rate(reps: int) -> float:
    """Frames per second of decoding alone: the run's reference."""
    clip = assets.sample_clip_path()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        count = sum(1 for _ in video.read_frames(clip))
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def run(head: TalkingHead, person, batch_size: int, reps: int, folder: Path) -> dict:
    """Median frame rate and stage times with marking on, and the time with marking off,
    measured in alternating reps (so load on the machine hits both alike)."""
    reports = {True: [], False: []}
    warmup = AnimateOptions(batch_size=batch_size)
    frames = list(video.read_frames(assets.sample_clip_path()))[:16]
    with video.VideoWriter(folder / "warm.mp4", 25) as writer:
        for frame in frames:
            writer.write(frame)
    jobs.animate_file(head, person, folder / "warm.mp4", folder / "w.mp4", warmup, progress=False)
    for rep in range(reps):
        for marked in (True, False):
            report = jobs.animate_file(
                head,
                person,
                assets.sample_clip_path(),
                folder / f"out{rep}-{marked}.mp4",
                AnimateOptions(batch_size=batch_size),
                stream=batch_size == 1,
                progress=False,
                marking=MarkingOptions(enabled=marked),
            )
            reports[marked].append(report)
    middle = sorted(reports[True], key=lambda r: r.seconds)[reps // 2]
    unmarked = statistics.median(r.seconds for r in reports[False])
    result = {
        "frames_per_s": middle.frames / middle.seconds,
        "marking +%": 100 * (middle.seconds / unmarked - 1),
    }
    for stage in STAGES:
        result[f"{stage} ms"] = 1e3 * middle.times.seconds.get(stage, 0.0) / middle.frames
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small-128", "paper-256"])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"{cpu_line()}\n--precision auto picks {auto} on this CPU")
    reference = decode_rate(args.reps)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.presets:
            preset = presets.load(name)
            torch.manual_seed(0)
            bundle = folder / f"{name}.safetensors"
            save_weights(bundle, dict(build_models(preset.model)._asdict()), preset, half=True)
            for precision in ("fp32", "bf16"):
                head = TalkingHead.from_checkpoint(bundle, precision=precision)
                person = head.personalize([video.read_image(assets.astronaut_path())], 0, False)
                for batch_size in (1, 8):
                    row = run(head, person, batch_size, args.reps, folder)
                    row |= {
                        "preset": name,
                        "precision": precision,
                        "batch": batch_size,
                        "x decode": row["frames_per_s"] / reference,
                    }
                    results.append(row)
                    print(f"{name} {precision} batch {batch_size}: {row['frames_per_s']:.1f} fps")
    print(
        f"\nreference: decoding alone {reference:.0f} frames/s ({torch.get_num_threads()} threads)"
    )
    print_table(
        results,
        [
            "preset",
            "precision",
            "batch",
            "frames_per_s",
            "x decode",
            "marking +%",
            *(f"{s} ms" for s in STAGES),
        ],
    )
    save_results(
        "animate", {"decode_frames_per_s": reference, "auto_precision": auto, "runs": results}
    )


if __name__ == "__main__":
    main()
