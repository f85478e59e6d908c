"""End-to-end animation speed: ``animate`` on the real sample clip with the bundled model.

    .venv/bin/python bench/animate.py [--reps 3] [--avx2] [--model BUNDLE] [--presets NAME ...]

Stages per frame: decode (PyAV), landmarks (dlib: detector every 5 frames, near the followed face,
landmark tracking between), render (rasterise + G), compose, mark (watermark; the file's tags and
C2PA manifest), encode (H.264). With ``overlap`` (the default of ``animate``) decoding runs in a
thread ahead of the renderer and mark + encode in one behind it, so the stage times add up to more
than the wall time (decode: the wait for the next decoded frame). The person is the astronaut photo
(1 shot) or 8 frames of the clip (8 shots: the warp family renders from up to 8), the driver the
120-frame carphone clip. Reported: medians over reps, and each configuration's frame rate as a
ratio of the same configuration without overlap, measured in alternating reps (so load on the
machine hits both alike). ``--presets`` adds random-weight presets (speed does not depend on the
weights). ``--avx2`` runs again with PyTorch capped at AVX2 (bench/common.py). Targets (issue 15):
the bundled default >= 25 frames/s end to end on 2 AVX2 cores, >= 40 on AVX-512.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from common import cpu_line, emulate_avx2, print_table, save_results

from talkinghead import assets, video
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.device import cpu_has_native_bf16
from talkinghead.inference import jobs
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.inference.render import AnimateOptions
from talkinghead.models import build_models

STAGES = ("decode", "landmarks", "render", "compose", "mark", "encode")


def run(head: TalkingHead, person, batch_size: int, reps: int, folder: Path) -> dict:
    """Median frame rate and stage times with overlap on, and the rate without, measured in
    alternating reps."""
    clip = assets.sample_clip_path()
    frames = list(video.read_frames(clip))[:16]
    with video.VideoWriter(folder / "warm.mp4", 25) as writer:
        for frame in frames:
            writer.write(frame)
    warmup = AnimateOptions(batch_size=batch_size)
    jobs.animate_file(head, person, folder / "warm.mp4", folder / "w.mp4", warmup, progress=False)
    reports = {True: [], False: []}
    for rep in range(reps):
        for overlap in (True, False):
            options = AnimateOptions(batch_size=batch_size, overlap=overlap)
            out = folder / f"out{rep}-{overlap}.mp4"
            report = jobs.animate_file(head, person, clip, out, options, progress=False)
            reports[overlap].append(report)
    middle = sorted(reports[True], key=lambda r: r.seconds)[reps // 2]
    serial = statistics.median(r.frames / r.seconds for r in reports[False])
    result = {"frames_per_s": middle.frames / middle.seconds, "serial frames_per_s": serial}
    result["x serial"] = result["frames_per_s"] / serial
    for stage in STAGES:
        result[f"{stage} ms"] = 1e3 * middle.times.seconds.get(stage, 0.0) / middle.frames
    return result


def people(head: TalkingHead) -> dict:
    clip = list(video.read_frames(assets.sample_clip_path()))
    return {
        1: head.personalize([video.read_image(assets.astronaut_path())], 0, False),
        8: head.personalize(clip[:: len(clip) // 8][:8], 0, False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    parser.add_argument("--presets", nargs="*", default=[], help="also: random-weight presets")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--avx2", action="store_true", help="PyTorch capped at AVX2")
    args = parser.parse_args()
    if args.avx2:
        emulate_avx2()
    print(cpu_line())
    precisions = ["fp32", "bf16"] if cpu_has_native_bf16() and not args.avx2 else ["fp32"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundles = {"bundled" if args.model is None else args.model.name: args.model}
        for name in args.presets:
            preset = presets.load(name)
            torch.manual_seed(0)
            bundles[name] = folder / f"{name}.safetensors"
            save_weights(bundles[name], dict(build_models(preset.model)._asdict()), preset)
        for name, bundle in bundles.items():
            for precision in precisions:
                head = jobs.load_model(bundle, "cpu", precision)
                for shots, person in people(head).items():
                    for batch_size in args.batch:
                        row = run(head, person, batch_size, args.reps, folder)
                        row |= {
                            "model": name,
                            "shots": shots,
                            "precision": precision,
                            "batch": batch_size,
                        }
                        results.append(row)
                        print(
                            f"{name} {shots} shots {precision} batch {batch_size}: "
                            f"{row['frames_per_s']:.1f} fps ({row['serial frames_per_s']:.1f} "
                            "without overlap)",
                            flush=True,
                        )
    print(f"\n{torch.get_num_threads()} torch threads")
    print_table(
        results,
        [
            "model",
            "shots",
            "precision",
            "batch",
            "frames_per_s",
            "serial frames_per_s",
            "x serial",
            *(f"{s} ms" for s in STAGES),
        ],
    )
    save_results("animate", {"runs": results})


if __name__ == "__main__":
    main()
