"""Loss curves of a training run (RUN/log.jsonl) as a PNG, for the model card.

.venv/bin/python scripts/plot_losses.py RUN OUT.png [--smooth 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead.evaluation.report import plot_lines

PANELS = {
    "generator": ["g/total", "g/adversarial", "g/feature_matching", "g/embedding_match"],
    "content": ["g/identity", "g/identity_descriptor", "g/pixel_l1", "g/ssim"],
    "discriminator": ["d/hinge_real", "d/hinge_fake"],
}


def smooth(values: list[float], window: int) -> list[float]:
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid").tolist() if len(values) > window else values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--smooth", type=int, default=20)
    args = parser.parse_args()
    log = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    panels = []
    for title, keys in PANELS.items():
        series = {}
        for key in keys:
            points = [(e["step"], e[key]) for e in log if key in e]
            if points:
                ys = smooth([y for _, y in points], args.smooth)
                series[key] = ([x for x, _ in points][-len(ys) :], ys)
        panels.append(plot_lines(series, f"{title} (moving mean of {args.smooth} logs)"))
    image = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    for index, panel in enumerate(panels):
        image.paste(panel, (index * panels[0].width, 0))
    image.save(args.out)
    print(f"loss curves of {len(log)} logged steps -> {args.out}")


if __name__ == "__main__":
    main()
