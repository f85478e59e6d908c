"""Live mode: a real clip played as a camera, at its own pace, through the capture thread and a
LiveSession with the bundled default model (fp32, CPU), rendered by PyTorch and by ONNX Runtime.

    .venv/bin/python bench/live.py [--seconds 10] [--backends torch onnxruntime]

Reported per clip: output frames/s, the fraction of camera frames dropped (never rendered),
capture-to-output latency (median, 95th percentile) and per output frame the time in each
stage: landmarks (dlib: detector every 5 frames, tracking between), render (batch 1; with
render workers, from handing the frame to a worker to having it back), mark (enlarge,
watermark, label), and the frame's age when the loop took it. Settings: 1 or 2 threads with
every stage in turn, and 2 render worker processes of 1 thread each (``live --workers 2``).
The reference measured in the same run is the model alone (a batch-1 render, looped, with the
setting's threads): "of model" is the live frame rate as a fraction of it. The run repeats in
a child process with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, which makes torch
use only AVX2 kernels, as on most laptops (ONNX Runtime has no such switch: its rows there
still use this CPU's kernels). Bar (issue 15):
>= 25 frames/s with median latency <= 120 ms on 2 AVX2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_line, print_table, save_results

from talkinghead import assets, video
from talkinghead.inference import onnx_backend
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.live import LiveSession, app
from talkinghead.live.capture import FileSource

CLIPS = {
    "carphone 176x144": assets.sample_clip_path(),
    "single_face 640x360": Path("/work/data/eval-clips/single_face.mp4"),
}
# (threads, render workers): in turn with 1 or 2 threads (one leaves a core to capture and
# landmarks), or 2 worker processes of 1 thread each (inference.workers).
SETTINGS = ((1, 1), (2, 1), (2, 2))
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def model_alone(head: TalkingHead, person, reps: int = 15) -> float:
    """Median seconds of a batch-1 render of the person (the reference of the run)."""
    targets = person.reference_landmarks[None]
    head.render(person, targets, 1)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        head.render(person, targets, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def play(head: TalkingHead, person, clip: Path, seconds: float, workers: int = 1) -> dict:
    """One clip looped as a camera for ``seconds``: the live figures and the stage times."""
    session = LiveSession(head, person)
    source = FileSource(clip, loop=True)
    options = app.LiveOptions(window=False, seconds=seconds, status_line=False, workers=workers)
    stats = app.run_live(session, source, options)
    summary = stats.summary()
    steps = max(len(stats.latencies), 1)
    stage_ms = {
        "landmarks_ms": 1e3 * session.times.seconds.get("landmarks", 0.0) / steps,
        "render_ms": 1e3 * session.times.seconds.get("render", 0.0) / max(session.times.frames, 1),
        "mark_ms": 1e3 * session.times.seconds.get("mark", 0.0) / steps,
    }
    return {
        **summary,
        "dropped_fraction": app.dropped_fraction(source),
        "camera_fps": source.fps,
        **stage_ms,
    }


def run(isa: str, seconds: float, backends: list[str]) -> list[dict]:
    head = TalkingHead.from_pretrained(device="cpu", precision="fp32")
    photo = video.read_image(assets.astronaut_path())
    person = head.personalize([photo], finetune_steps=0, progress=False)
    rows = []
    for backend, (threads, workers) in [(b, s) for b in backends for s in SETTINGS]:
        app.use_threads(threads)
        head.backend_renderer = None
        if backend == "onnxruntime":
            head.backend_renderer = onnx_backend.OnnxRenderer(head, num_threads=threads)
        model_s = model_alone(head, person)
        for name, clip in CLIPS.items():
            if not clip.is_file():
                print(f"skipping {name}: {clip} not found")
                continue
            row = {"isa": isa, "backend": backend, "clip": name, "threads": threads}
            row |= {"workers": workers} | play(head, person, clip, seconds, workers)
            row |= {"model_alone_fps": 1.0 / model_s, "model_alone_ms": 1e3 * model_s}
            row["of_model"] = row["frames_per_second"] / row["model_alone_fps"]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per clip and setting")
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"]
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON path: the AVX2-only run
    args = parser.parse_args()
    if args.child:
        Path(args.child).write_text(json.dumps(run("avx2 only", args.seconds, args.backends)))
        return
    rows = run("native", args.seconds, args.backends)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "avx2.json"
        command = [sys.executable, __file__, "--seconds", str(args.seconds), "--child", str(out)]
        command += ["--backends", *args.backends]
        subprocess.run(command, env={**os.environ, **AVX2_ONLY}, check=True)
        rows += json.loads(out.read_text())
    columns = [
        "isa", "backend", "threads", "workers", "clip", "frames_per_second", "dropped_fraction",
        "latency_median_ms", "latency_p95_ms", "landmarks_ms", "render_ms", "mark_ms",
        "frame_age_median_ms", "model_alone_fps", "of_model",
    ]  # fmt: skip
    print_table(rows, columns)
    print("bar: >= 25 frames/s, median latency <= 120 ms on 2 AVX2 cores")
    save_results("live", {"cpu": cpu_line(), "seconds_per_clip": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
