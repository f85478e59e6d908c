"""This tree's speed against an earlier commit's, measured in alternating processes.

    .venv/bin/python bench/versus.py REV [--rounds 5] [--avx2]

On a shared machine the speed of the same code swings by 1.5x within minutes, so a figure from
another run says little about a change. This bench checks ``REV`` out in a temporary git
worktree and runs the same measurement in a fresh process on each tree in turn (ABBA order),
``--rounds`` times: network alone (``TalkingHead.render``: landmark images and G, 32 frames, the
best of 3) at batch 1 and 8 with the astronaut photo (1 shot) and 8 frames of the sample clip (8
shots), and ``animate`` end to end on the sample clip (1 shot, batch 8, overlap on). Each tree
loads its own bundled default model (the same file unless the default changed in between, when
the ratio is the new default's against the old one's); fp32. Reported: the median of each
figure over the rounds and this tree's speed as a ratio of REV's.
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

from common import cpu_line, emulate_avx2, print_table, save_results

ROOT = Path(__file__).resolve().parent.parent
RENDER_FRAMES = 32


def measure() -> dict:
    """One process's figures (run with the tree under test first on ``sys.path``)."""
    import numpy as np

    from talkinghead import assets, video
    from talkinghead.inference import jobs
    from talkinghead.inference.pipeline import TalkingHead
    from talkinghead.inference.render import AnimateOptions

    head = TalkingHead.from_pretrained(device="cpu", precision="fp32")
    clip = list(video.read_frames(assets.sample_clip_path()))
    people = {
        1: head.personalize([video.read_image(assets.astronaut_path())], 0, False),
        8: head.personalize(clip[:: len(clip) // 8][:8], 0, False),
    }
    rng = np.random.default_rng(0)
    figures = {}
    for shots, person in people.items():
        base = person.reference_landmarks
        targets = base + rng.normal(0, 1.0, (RENDER_FRAMES, *base.shape)).astype(np.float32)
        for batch in (1, 8):
            head.render(person, targets[:8], batch)  # warm-up
            seconds = []
            for _ in range(3):
                start = time.perf_counter()
                head.render(person, targets, batch)
                seconds.append(time.perf_counter() - start)
            figures[f"render {shots} shot b{batch} frames/s"] = RENDER_FRAMES / min(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        options = AnimateOptions(batch_size=8)
        clip_path = assets.sample_clip_path()
        jobs.animate_file(head, people[1], clip_path, Path(tmp) / "w.mp4", options, progress=False)
        report = jobs.animate_file(
            head, people[1], clip_path, Path(tmp) / "o.mp4", options, progress=False
        )
    figures["animate 1 shot b8 frames/s"] = report.frames / report.seconds
    return figures


def run_child(source: Path, env: dict) -> dict:
    """``measure`` in a fresh process with ``source`` (a tree's src/) first on the path."""
    env = env | {"PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"bench/versus.py: the run on {source} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--avx2", action="store_true", help="PyTorch capped at AVX2")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return
    if not args.rev:
        parser.error("give the commit to compare with")
    if args.avx2:
        emulate_avx2()  # the children inherit the cap
    env = dict(os.environ)
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "rev"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.rev],
            check=True,
        )
        try:
            trees = {"this tree": ROOT / "src", args.rev: worktree / "src"}
            figures: dict[str, list[dict]] = {name: [] for name in trees}
            for round_index in range(args.rounds):
                order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
                for name in order:
                    figures[name].append(run_child(trees[name], env))
                print(f"round {round_index + 1}/{args.rounds} done", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    rows = []
    for metric in figures["this tree"][0]:
        new = statistics.median(f[metric] for f in figures["this tree"])
        old = statistics.median(f[metric] for f in figures[args.rev])
        rows.append({"what": metric, "this tree": new, args.rev: old, "x": new / old})
    print_table(rows, ["what", "this tree", args.rev, "x"])
    save_results("versus", {"rev": args.rev, "rounds": args.rounds, "rows": rows, "runs": figures})


if __name__ == "__main__":
    main()
