"""Evaluation outputs: terminal tables, JSON, a Markdown report and two figures (PNG).

Tables list every person's row and, per (protocol, method, T), an ``all`` row: the mean of the
per-person rows over the whole held-out set (each person weighs the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead.evaluation.bars import ALL, check_bars
from talkinghead.fileio import atomic_write_text
from talkinghead.landmarks.rasterize import draw_landmarks
from talkinghead.provenance import OutputMark

IDENTIFIERS = ("video", "protocol", "method", "T")
SELF_COLUMNS = (
    "fid",  # only with the user's FID Inception weights
    "lpips",  # only with the user's VGG16 + LPIPS weights
    "ssim",
    "psnr",
    "csim",
    "identity_distance",
    "identity_frechet",  # Frechet distance on identity descriptors: not FID
    "landmark_error",
    "landmark_misses",  # fraction of frames where dlib finds no face
    "jitter_ratio",  # on the consecutive run: result / real frames
    "mouth_correlation",
)
CROSS_COLUMNS = (
    "csim",
    "identity_distance",  # to A (the person)
    "same_person_fraction",  # frames with distance to A below 0.6
    "driver_distance",  # to B (the driver)
    "landmark_error",
    "landmark_misses",
    "jitter_ratio",  # result / the driver's real frames
    "mouth_correlation",
)
TITLES = {
    "self": "Self-reenactment (hold-out frames; jitter and mouth on the consecutive run)",
    "cross": "Cross-person: A driven by B's consecutive run (relative motion)",
}
DEFINITIONS = (
    "Self-reenactment: personalise on T frames of a video's first part, render hold-out frames "
    "of its second part from their own landmarks, compare with the real frames. Cross: person "
    "A driven by B's consecutive frames (relative motion, from B's frame whose mouth opening "
    "matches A's first shot); identity against A's shots "
    "(same_person_fraction: frames with distance below 0.6) and against B's frames "
    "(driver_distance), landmark error against the motion targets. SSIM/PSNR on the face crop; "
    "CSIM = cosine of dlib face descriptors (not centred: any two faces score ~0.8, so compare "
    "rows); identity distance = their euclidean distance (dlib: same person below 0.6); "
    "identity_frechet = Frechet distance between the descriptor sets (not FID); FID and LPIPS "
    "only with the user's weights; landmark error normalised by the inter-ocular distance; "
    "landmark_misses = fraction of frames where dlib finds no face on the result. Temporal "
    "measures use a run of consecutive frames of each video's second part, where the mouth "
    "moves most (self: rendered from its own landmarks; cross: B's run drives A), with "
    "landmarks found by "
    "dlib on the results and on the real frames alike: jitter = mean norm of the second "
    "difference of landmark positions over the inter-ocular distance, jitter_ratio = result's / "
    "real frames'; mouth_correlation = Pearson correlation of the inner-lip opening (over the "
    "inter-ocular distance) of the result with the real frames' (not measured when the real "
    "mouth opening varies by less than 0.01). 'all' rows: the mean over the "
    "held-out people of their rows."
)


def summarise(rows: list[dict]) -> list[dict]:
    """Every person's row, then per (protocol, method, T) an ``all`` row: the mean of each
    metric over the people (values that are None, e.g. no face found, are left out)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["protocol"], row["method"], row["T"]), []).append(row)
    table = [dict(row) for row in rows]
    for (protocol, method, shots), members in groups.items():
        entry = {"video": ALL, "protocol": protocol, "method": method, "T": shots}
        entry["videos"] = len(members)
        for column in dict.fromkeys(k for m in members for k in m if k not in IDENTIFIERS):
            values = [m[column] for m in members if m.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        table.append(entry)
    protocols, methods = _order(rows, "protocol"), _order(rows, "method")
    videos = _order(rows, "video")
    videos[ALL] = len(videos)
    return sorted(
        table,
        key=lambda r: (protocols[r["protocol"]], videos[r["video"]], r["T"], methods[r["method"]]),
    )


def _order(rows: list[dict], key: str) -> dict:
    """Values of ``key`` by first appearance -> rank."""
    return {value: rank for rank, value in enumerate(dict.fromkeys(r[key] for r in rows))}


def _columns(rows: list[dict], protocol: str) -> list[str]:
    """The protocol's metric columns that hold a value somewhere (FID without weights: none)."""
    columns = SELF_COLUMNS if protocol == "self" else CROSS_COLUMNS
    return [c for c in columns if any(r.get(c) is not None for r in rows)]


def format_table(summary: list[dict]) -> str:
    """Plain-text tables, one per protocol."""
    blocks = []
    for protocol, title in TITLES.items():
        rows = [r for r in summary if r["protocol"] == protocol]
        if rows:
            columns = ["video", "T", "method", *_columns(rows, protocol)]
            blocks.append(title + "\n" + _text_table(columns, rows))
    return "\n\n".join(blocks)


def format_bars(bars: list[dict]) -> str:
    """The bars as a plain-text table."""
    columns = ["bar", "method", "T", "value", "threshold", "pass"]
    rows = [_bar_cells(b) | {"bar": b["bar"], "method": b["method"], "T": b["T"]} for b in bars]
    return "Bars (issue 14; the whole held-out set)\n" + _text_table(columns, rows)


def format_results(rows: list[dict]) -> str:
    """What the terminal shows: the tables (every person, then 'all') and the bars."""
    summary = summarise(rows)
    return format_table(summary) + "\n\n" + format_bars(check_bars(summary))


def _bar_cells(bar: dict) -> dict:
    verdict = {True: "pass", False: "FAIL", None: "not measured"}[bar["passed"]]
    verdict += f" ({bar['note']})" if bar.get("note") else ""
    threshold = "-" if bar["threshold"] is None else f"{bar['op']} {bar['threshold']:.4f}"
    return {"value": bar["value"], "threshold": threshold, "pass": verdict}


def _text_table(columns: list[str], rows: list[dict]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown_table(columns: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]


def markdown(
    summary: list[dict], timings: dict, model: str, bars: list[dict], frames: bool = False
) -> str:
    """The report; ``frames``: whether frames.png was written beside it (else no link)."""
    lines = ["# talkinghead evaluation", "", f"Model: `{model}`. {DEFINITIONS}", ""]
    bar_rows = [b | _bar_cells(b) for b in bars]
    lines += ["## Bars (issue 14): the whole held-out set", ""]
    lines += _markdown_table(["bar", "method", "T", "value", "threshold", "pass"], bar_rows)
    for heading, pick in (
        ("Whole held-out set (mean over people)", lambda r: r["video"] == ALL),
        ("Per person", lambda r: r["video"] != ALL),
    ):
        for protocol, title in TITLES.items():
            rows = [r for r in summary if r["protocol"] == protocol and pick(r)]
            if rows:
                columns = ["video", "T", "method", *_columns(rows, protocol)]
                lines += ["", f"## {heading}: {title}", "", *_markdown_table(columns, rows)]
    parts = _parts(timings)
    lines += ["", "## Time per video (seconds)", ""]
    timing_rows = [
        {"video": name} | {p: t.get(p, 0.0) for p in parts} for name, t in timings.items()
    ]
    lines += _markdown_table(["video", *parts], [_one_decimal(r) for r in timing_rows])
    lines += [""] + (
        ["![frames: landmarks | warp | ours | real](frames.png)", ""] if frames else []
    )
    return "\n".join([*lines, "![metrics vs T](metrics.png)", ""])


def _one_decimal(row: dict) -> dict:
    return {k: f"{v:.1f}" if isinstance(v, float) else v for k, v in row.items()}


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

    ``grid`` holds generated frames (see :func:`frames_grid`), so it is written through
    ``mark`` (watermark + signed label; required with a grid); metrics.png is a chart and
    stays unmarked.
    """
    if grid is not None and mark is None:
        raise ValueError("a frames grid holds generated frames: give the OutputMark to write it")
    summary = summarise(rows)
    bars = check_bars(summary)
    paths = {
        "json": out / "results.json",
        "markdown": out / "report.md",
        "plot": out / "metrics.png",
    }
    results = {"model": model, "bars": bars, "summary": summary, "rows": rows, "timings": timings}
    atomic_write_text(paths["json"], json.dumps(results, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown(summary, timings, model, bars, grid is not None))
    plot_metrics(summary).save(paths["plot"])
    if grid is not None:
        paths["frames"] = out / "frames.png"
        mark.save_png(paths["frames"], grid)
    return paths


def frames_grid(samples: dict) -> np.ndarray | None:
    """Columns landmarks | warp | ours | real, a few hold-out frames of each person (the
    :class:`~talkinghead.evaluation.protocol.FrameSamples` by video), under a header; a strip
    names each person. [H,W,3] uint8; None without samples."""
    if not samples:
        return None
    first = next(iter(samples.values()))
    size = first.real.shape[1]
    header = ["landmarks", "warp", f"ours\n{first.label}", "real"]
    blocks = [_text_strip(header, size, 28)]
    for name, sample in samples.items():
        blocks.append(_text_strip([name], 4 * size, 14))
        for row in zip(sample.landmarks, sample.warp, sample.ours, sample.real):
            blocks.append(np.concatenate([draw_landmarks(row[0], size), *row[1:]], axis=1))
    return np.concatenate(blocks, axis=0)


def _text_strip(texts: list[str], cell_width: int, height: int) -> np.ndarray:
    """A white strip [height, cell_width * len(texts), 3] with one text per cell."""
    image = Image.new("RGB", (cell_width * len(texts), height), "white")
    draw = ImageDraw.Draw(image)
    for index, text in enumerate(texts):
        draw.multiline_text((index * cell_width + 3, 1), text, fill="black", spacing=2)
    return np.asarray(image)


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


def plot_metrics(
    summary: list[dict], metrics=("ssim", "psnr", "identity_distance", "landmark_error")
) -> Image.Image:
    """Metric vs T for each self-reenactment method over the whole held-out set ('all' rows),
    one panel per metric, side by side."""
    rows = [r for r in summary if r["protocol"] == "self" and r["video"] == ALL]
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
