"""Evaluation outputs: a terminal table, JSON, a Markdown report and two figures (PNG)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.fileio import atomic_write_text
from talkinghead.provenance import OutputMark

METRIC_COLUMNS = (
    "fid",  # only with the user's FID Inception weights
    "lpips",  # only with the user's VGG16 + LPIPS weights
    "ssim",
    "psnr",
    "csim",
    "identity_distance",
    "identity_frechet",  # Frechet distance on identity descriptors: not FID
    "landmark_error",
    "landmark_misses",
)


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
        "identity_frechet = Frechet distance between the descriptor sets (not FID); FID only "
        "with the user's Inception weights; "
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
    out: Path,
    rows: list[dict],
    timings: dict,
    model: str,
    grid: np.ndarray | None = None,
    mark: OutputMark | None = None,
) -> dict[str, Path]:
    """Write results.json, report.md, metrics.png (and frames.png) under ``out``.

    ``grid`` holds generated frames, so it is written through ``mark`` (watermark + signed
    label; required with a grid); metrics.png is a chart and stays unmarked.
    """
    if grid is not None and mark is None:
        raise ValueError("a frames grid holds generated frames: give the OutputMark to write it")
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
        mark.save_png(paths["frames"], grid)
    return paths


COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def plot_lines(
    series: dict[str, tuple[list[float], list[float]]], title: str, size=(320, 240)
) -> Image.Image:
    """A small line chart: ``series`` maps a name to (xs, ys); axes labelled with the ranges."""
    width, height = size
    image = Image.new("RGB", (width, height + 20 * len(series)), "white")
    draw = ImageDraw.Draw(image)
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
    if not points:
        return image
    (x_low, y_low), (x_high, y_high) = np.min(points, axis=0), np.max(points, axis=0)
    x_high, y_high = max(x_high, x_low + 1e-9), max(y_high, y_low + 1e-9)
    left, top, right, bottom = 48, 20, width - 10, height - 20
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 4), title, fill="black")
    draw.text((2, top), f"{y_high:.3g}", fill="black")
    draw.text((2, bottom - 10), f"{y_low:.3g}", fill="black")
    draw.text((left, bottom + 4), f"{x_low:.4g}", fill="black")
    draw.text((right - 40, bottom + 4), f"{x_high:.4g}", fill="black")

    def place(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_low) / (x_high - x_low) * (right - left),
            bottom - (y - y_low) / (y_high - y_low) * (bottom - top),
        )

    for index, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        line = [place(x, y) for x, y in zip(xs, ys)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for x, y in line if len(line) < 12 else []:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([10, height + 20 * index + 4, 20, height + 20 * index + 14], fill=colour)
        draw.text((26, height + 20 * index + 3), name, fill="black")
    return image


def plot_metrics(summary: list[dict], metrics=("ssim", "csim", "landmark_error")) -> Image.Image:
    """Metric vs T for each self-reenactment method, one panel per metric, side by side."""
    rows = [r for r in summary if r["protocol"] == "self"]
    panels = []
    for metric in metrics:
        series = {}
        for method in sorted({r["method"] for r in rows}):
            chosen = sorted(
                (r["T"], r[metric])
                for r in rows
                if r["method"] == method and r.get(metric) is not None
            )
            series[method] = ([t for t, _ in chosen], [v for _, v in chosen])
        panels.append(plot_lines(series, f"{metric} vs T"))
    width = sum(p.width for p in panels)
    image = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    for index, panel in enumerate(panels):
        image.paste(panel, (index * panels[0].width, 0))
    return image
