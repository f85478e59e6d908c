"""Shared helpers for the benchmark scripts: medians, tables, JSON results.

Every table is printed under, and every JSON saved with, the CPU's vector extensions: a figure
means little without them (bf16 renders ~1.25x faster than fp32 with AMX, 7x slower on AVX2).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from talkinghead.device import VECTOR_FLAGS, cpu_summary

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_line() -> str:
    """One line naming the CPU, its vector extensions and whether bf16 is native."""
    cpu = cpu_summary()
    extensions = " ".join(cpu["cpu_vector_extensions"]) or "none of " + "/".join(VECTOR_FLAGS)
    native = "native bf16" if cpu["cpu_native_bf16"] else "no native bf16 (bf16 is emulated)"
    return (
        f"CPU: {cpu['cpu_model']}; extensions: {extensions}; torch kernels "
        f"{cpu['cpu_capability']}; {native}"
    )


def print_table(rows: list[dict], columns: list[str]) -> None:
    print(cpu_line())
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def save_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        **cpu_summary(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {path}")
    return path
