"""Evaluation outputs: a terminal table, JSON, a Markdown report and two figures (PNG)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.fileio import atomic_write_text

METRIC_COLUMNS = ("ssim", "psnr", "csim", "identity_distance", "landmark_error", "landmark_misses")
HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "csim": True, "landmark_error": False}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean of every metric over videos, one row per (protocol, method, T)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["protocol"], row["method"], row["T"])].append(row)
    summary = []
    for (protocol, method, shots), members in sorted(groups.items(), key=lambda kv: kv[0]):
        entry = {"protocol": protocol, "method": method, "T": shots, "videos": len(members)}
        for column in METRIC_COLUMNS:
            values = [m[column] for m in members if m.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        summary.append(entry)
    return summary


def format_table(summary: list[dict]) -> str:
    columns = ["protocol", "method", "T", *METRIC_COLUMNS]
    cells = [[_cell(row.get(c)) for c in columns] for row in summary]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(summary: list[dict], timings: dict, model: str) -> str:
    columns = ["protocol", "method", "T", *METRIC_COLUMNS]
    lines = [
        "# talkinghead evaluation",
        "",
        f"Model: `{model}`. Self-reenactment: personalise on T frames of a video's first part, "
        "render hold-out frames of its second part from their own landmarks, compare with the "
        "real frames. Cross: person A driven by video B (relative motion); CSIM against A's "
        "shots, landmark error against the motion targets. SSIM/PSNR on the face crop; CSIM = "
        "cosine of dlib face descriptors (not centred: any two faces score ~0.8, so compare "
        "rows); identity distance = their euclidean distance (dlib: same person below 0.6); "
        "landmark error normalised by the inter-ocular "
        "distance (misses: frames where no face was found on the result).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in summary]
    lines += [
        "",
        "## Time per video (seconds)",
        "",
        "| video | " + " | ".join(_parts(timings)) + " |",
        "|" + "---|" * (len(_parts(timings)) + 1),
    ]
    for name, parts in timings.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{parts.get(p, 0.0):.1f}" for p in _parts(timings)) + " |"
        )
    lines += ["", "![frames](frames.png)", "", "![metrics vs T](metrics.png)", ""]
    return "\n".join(lines)


def _parts(timings: dict) -> list[str]:
    return sorted({part for parts in timings.values() for part in parts})


def write_report(
    out: Path, rows: list[dict], timings: dict, model: str, grid: np.ndarray | None = None
) -> dict[str, Path]:
    """Write results.json, report.md, metrics.png (and frames.png) under ``out``."""
    summary = summarise(rows)
    paths = {
        "json": out / "results.json",
        "markdown": out / "report.md",
        "plot": out / "metrics.png",
    }
    atomic_write_text(
        paths["json"],
        json.dumps({"model": model, "summary": summary, "rows": rows, "timings": timings}, indent=2)
        + "\n",
    )
    atomic_write_text(paths["markdown"], markdown(summary, timings, model))
    plot_metrics(summary).save(paths["plot"])
    if grid is not None:
        paths["frames"] = out / "frames.png"
        Image.fromarray(grid).save(paths["frames"])
    return paths


COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def plot_metrics(summary: list[dict], metrics=("ssim", "csim", "landmark_error")) -> Image.Image:
    """Metric vs T for each self-reenactment method, one small panel per metric."""
    panel_w, panel_h, margin = 260, 200, 36
    image = Image.new("RGB", (panel_w * len(metrics), panel_h + 90), "white")
    draw = ImageDraw.Draw(image)
    rows = [r for r in summary if r["protocol"] == "self"]
    methods = sorted({r["method"] for r in rows})
    for index, metric in enumerate(metrics):
        x0 = index * panel_w + margin
        values = [r[metric] for r in rows if r.get(metric) is not None]
        shots = sorted({r["T"] for r in rows})
        if not values or not shots:
            continue
        low, high = min(values), max(values)
        high = high if high > low else low + 1e-6
        draw.rectangle([x0, 20, x0 + panel_w - margin - 10, panel_h], outline="black")
        draw.text((x0, 4), f"{metric} vs T", fill="black")
        width = panel_w - margin - 30

        def point(t, v, x0=x0, low=low, high=high, shots=shots, width=width):
            position = shots.index(t) / max(len(shots) - 1, 1)
            return (x0 + 10 + position * width, panel_h - 10 - (v - low) / (high - low) * 160)

        for t in shots:
            draw.text((point(t, low)[0] - 4, panel_h + 4), str(t), fill="black")
        draw.text((x0 - margin + 2, 24), f"{high:.3g}", fill="black")
        draw.text((x0 - margin + 2, panel_h - 14), f"{low:.3g}", fill="black")
        for colour, method in zip(COLOURS, methods):
            line = [
                point(r["T"], r[metric])
                for r in rows
                if r["method"] == method and r.get(metric) is not None
            ]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    for i, (colour, method) in enumerate(zip(COLOURS, methods)):
        draw.rectangle([10 + 190 * i, panel_h + 30, 20 + 190 * i, panel_h + 40], fill=colour)
        draw.text((24 + 190 * i, panel_h + 29), method, fill="black")
    return image
