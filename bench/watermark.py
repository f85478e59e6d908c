"""Watermark targets: detection after re-uploads, false positives on real footage, cost.

    python bench/watermark.py [--videos 12] [--frames 48] [--keys 16] [--no-model]

Our outputs: videos rendered by the bundled model (two people, driven by the sample clip) and
stand-ins made of real frames (face crops of the sample clip and of the astronaut, moving,
128 and 256 px), marked and written as the pipeline writes them (H.264, CRF 18). Each attack of
the issue is applied on its own; a video counts as detected when ``detect_frames`` over its
frames says marked, a JPEG frame when the single frame does.

False positives: every frame of the real sample clip on its own and as a whole video, the real
still pictures (astronaut, LFW faces, scikit-image's other photos), and unmarked videos made
from them, attacked the same way. The empirical null re-runs the detector on real frames with
random keys: the largest score seen, against the threshold.

Cost: PSNR of marked vs unmarked frames; ms per frame to mark 128 and 256 px frames, as a ratio
of JPEG-encoding the same frame (measured in the same run) and of animate's frame time.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, median_seconds, print_table, save_results
from PIL import Image

from talkinghead import assets, video
from talkinghead.provenance import attacks
from talkinghead.provenance.watermark import (
    Marker,
    WatermarkConfig,
    detect_frames,
    score_threshold,
)


def crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.asarray(Image.fromarray(image[y0:y1, x0:x1]).resize((size, size), Image.BICUBIC))


def moving_crops(image, centre, side, num_frames, size, seed) -> list[np.ndarray]:
    """A still photo seen by a slowly moving, zooming virtual camera."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = []
    for i in range(num_frames):
        dx = 0.04 * side * np.sin(i / 7 + phase[0])
        dy = 0.03 * side * np.cos(i / 5 + phase[1])
        half = side / 2 * (1 + 0.05 * np.sin(i / 11 + phase[2]))
        x, y = centre[0] + dx, centre[1] + dy
        frames.append(
            crop(image, (round(x - half), round(y - half), round(x + half), round(y + half)), size)
        )
    return frames


def real_videos(num_frames: int) -> dict[str, list[np.ndarray]]:
    """Unmarked videos made from real footage (the stand-ins for outputs, before marking)."""
    clip = list(video.read_frames(assets.sample_clip_path()))
    astronaut = video.read_image(assets.astronaut_path())
    videos = {}
    for i, (box, size) in enumerate(
        [((31, 8, 151, 128), 128), ((20, 0, 164, 144), 128), ((40, 10, 140, 110), 256)]
    ):
        start = (i * 37) % (len(clip) - num_frames)
        videos[f"clip crop {i} {size}px"] = [
            crop(f, box, size) for f in clip[start : start + num_frames]
        ]
    for i, size in enumerate([128, 128, 256]):
        videos[f"astronaut {i} {size}px"] = moving_crops(
            astronaut, (223, 127), 180, num_frames, size, i
        )
    return videos


def model_videos(num_videos: int, num_frames: int) -> dict[str, list[np.ndarray]]:
    """Videos by the bundled model: the astronaut and the clip's man, driven by the clip."""
    from talkinghead.inference import jobs
    from talkinghead.inference.render import animate_frames

    head = jobs.load_model()
    clip = list(video.read_frames(assets.sample_clip_path()))
    people = {
        "astronaut": [video.read_image(assets.astronaut_path())],
        "clip man": [clip[0], clip[60]],
    }
    videos = {}
    for name, shots in people.items():
        person = head.personalize(shots, finetune_steps=0, progress=False, names=[name])
        rendered = list(animate_frames(head, person, iter(clip)))
        for start in range(0, len(rendered) - num_frames + 1, num_frames // 2):
            if (
                len(videos) < num_videos
                and sum(k.startswith(name) for k in videos) < num_videos // 2
            ):
                videos[f"{name} model {start}"] = rendered[start : start + num_frames]
    return videos


def still_pictures() -> dict[str, np.ndarray]:
    from skimage import data

    pictures = {"astronaut": video.read_image(assets.astronaut_path())}
    for name in (
        "camera",
        "coffee",
        "chelsea",
        "rocket",
        "immunohistochemistry",
        "retina",
    ):
        image = np.asarray(getattr(data, name)())
        pictures[name] = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    for i, face in enumerate(data.lfw_subset()):
        grey = (np.clip(face, 0, 1) * 255).astype(np.uint8)
        pictures[f"lfw {i}"] = np.stack([grey] * 3, -1)
    for path in ("/usr/share/doc/opencv-doc/examples/data/messi5.jpg",):
        if Path(path).is_file():
            pictures[Path(path).stem] = video.read_image(path)
    return pictures


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def _group(name: str) -> str:
    return "model" if " model " in name else "stand-in"


def _detection_row(attack: str, unit: str, found: list) -> dict:
    return {
        "attack": attack,
        "unit": unit,
        "detected": sum(d.marked for d in found),
        "of": len(found),
        "rate": float(np.mean([d.marked for d in found])),
        "min margin": min(d.score - d.threshold for d in found),
        "id ok": sum(d.payload_id == 0 for d in found),
    }


def detection_rows(outputs, config, jpeg_per_video: int) -> list[dict]:
    """One row per attack and per kind of output (the model's videos, the real stand-ins)."""
    found: dict[tuple[str, str], list] = {}
    for name, frames in outputs.items():
        cases = {"none (our output)": ({}, frames)}
        for attack, options in attacks.VIDEO_ATTACKS.items():
            cases[attack] = (options, attacks.reencode(frames, **options))
        for attack, (options, attacked) in cases.items():
            fps = options.get("out_fps", 30.0)
            found.setdefault((attack, _group(name)), []).append(
                detect_frames(attacked, config, fps)
            )
        picks = frames[:: max(1, len(frames) // jpeg_per_video)][:jpeg_per_video]
        found.setdefault(("single frame, JPEG q75", _group(name)), []).extend(
            detect_frames([attacks.jpeg(f, 75)], config) for f in picks
        )
    rows = []
    for (attack, group), items in found.items():
        unit = "frame" if attack.startswith("single") else "video"
        rows.append({"outputs": group, **_detection_row(attack, unit, items)})
    return sorted(rows, key=lambda r: r["outputs"])


def false_positive_rows(real, config) -> list[dict]:
    clip = list(video.read_frames(assets.sample_clip_path()))
    groups = {
        "sample clip, every frame": [[f] for f in clip],
        "sample clip, whole video": [clip],
        "still pictures": [[p] for p in still_pictures().values()],
        "real videos (unmarked, as written)": list(real.values()),
    }
    rates = {"sample clip, whole video": 29.97}
    for attack, options in attacks.VIDEO_ATTACKS.items():
        groups[f"real videos after {attack}"] = [
            attacks.reencode(v, **options) for v in real.values()
        ]
        rates[f"real videos after {attack}"] = options.get("out_fps", 30.0)
    rows = []
    for name, items in groups.items():
        found = [detect_frames(frames, config, rates.get(name, 30.0)) for frames in items]
        rows.append(
            {
                "real input": name,
                "checked": len(found),
                "flagged": sum(d.marked for d in found),
                "max margin": max(d.score - d.threshold for d in found),
                "min false-alarm bound": min(d.false_alarm for d in found),
            }
        )
    return rows


def random_key_null(frames: list[np.ndarray], num_keys: int, config) -> dict:
    """Max scores of the detector with wrong (random) keys on real frames: the empirical null."""
    scores = []
    for key in range(num_keys):
        other = WatermarkConfig(key=f"random key {key}")
        scores += [detect_frames([f], other).score for f in frames]
    return {
        "detections": len(scores),
        "max score": float(max(scores)),
        "mean score": float(np.mean(scores)),
        "threshold": score_threshold(config),
    }


def cost_rows(outputs, config) -> list[dict]:
    rows = []
    animate_ms = None
    animate_file = RESULTS / "animate.json"
    if animate_file.is_file():
        runs = json.loads(animate_file.read_text()).get("runs", [])
        best = max((r["frames_per_s"] for r in runs if "frames_per_s" in r), default=None)
        animate_ms = 1e3 / best if best else None
    for size in (128, 256):
        frames = [f for v in outputs.values() for f in v if f.shape[0] == size] or [
            np.asarray(Image.fromarray(f).resize((size, size)))
            for f in next(iter(outputs.values()))
        ]
        marker = Marker(payload_id=0, config=config)
        marker.mark_frame(frames[0])  # builds the cached pattern
        frame = frames[len(frames) // 2]
        mark_s = median_seconds(functools.partial(marker.mark_frame, frame), reps=200, warmup=10)
        jpeg_s = median_seconds(functools.partial(attacks.jpeg, frame, 90), reps=50, warmup=3)
        quality = [psnr(marker.mark_frame(f), f) for f in frames]
        rows.append(
            {
                "size": f"{size}px",
                "mark ms": 1e3 * mark_s,
                "jpeg ms": 1e3 * jpeg_s,
                "mark/jpeg": mark_s / jpeg_s,
                "mark/animate frame": (1e3 * mark_s / animate_ms) if animate_ms else None,
                "psnr min dB": min(quality),
                "psnr mean dB": float(np.mean(quality)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--videos", type=int, default=12, help="output videos (half from the model)"
    )
    parser.add_argument("--frames", type=int, default=48, help="frames per output video")
    parser.add_argument("--jpeg-per-video", type=int, default=8)
    parser.add_argument("--keys", type=int, default=16, help="random keys for the empirical null")
    parser.add_argument("--no-model", action="store_true", help="stand-ins only (no bundled model)")
    args = parser.parse_args()
    config = WatermarkConfig()
    start = time.perf_counter()

    real = real_videos(args.frames)
    outputs_raw = dict(list(real.items())[: args.videos])
    if not args.no_model:
        outputs_raw = {
            **model_videos(args.videos // 2, args.frames),
            **dict(list(real.items())[: args.videos - args.videos // 2]),
        }
    # Our output: marked frames (frame numbers from 0, 30 fps) through the writer the pipeline
    # uses (CRF 18).
    outputs = {
        name: attacks.reencode(
            [Marker(0, config=config).mark_frame(f, i) for i, f in enumerate(frames)], crf=18
        )
        for name, frames in outputs_raw.items()
    }

    print(
        f"threshold {score_threshold(config):.2f} "
        f"(false-alarm bound {config.max_false_alarm:g} per file)\n"
    )
    detection = detection_rows(outputs, config, args.jpeg_per_video)
    columns = ["outputs", "attack", "unit", "detected", "of", "rate", "min margin", "id ok"]
    print_table(detection, columns)
    print()
    false_pos = false_positive_rows(real, config)
    print_table(
        false_pos, ["real input", "checked", "flagged", "max margin", "min false-alarm bound"]
    )
    print()
    clip = list(video.read_frames(assets.sample_clip_path()))
    null = random_key_null(
        clip[:: max(1, len(clip) // 8)][:8] + [video.read_image(assets.astronaut_path())],
        args.keys,
        config,
    )
    print(
        f"empirical null, random keys: {null['detections']} detections, "
        f"max score {null['max score']:.2f} (threshold {null['threshold']:.2f})\n"
    )
    cost = cost_rows(outputs_raw, config)
    print_table(
        cost,
        [
            "size",
            "mark ms",
            "jpeg ms",
            "mark/jpeg",
            "mark/animate frame",
            "psnr min dB",
            "psnr mean dB",
        ],
    )
    save_results(
        "watermark",
        {
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "threshold": score_threshold(config),
            "detection": detection,
            "false_positives": false_pos,
            "random_key_null": null,
            "cost": cost,
            "seconds": time.perf_counter() - start,
            "args": vars(args),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
