"""Shared helpers for the benchmark scripts: medians, tables, JSON results.

Every table is printed under, and every JSON saved with, the CPU's vector extensions: a figure
means little without them (bf16 renders ~1.25x faster than fp32 with AMX, 7x slower on AVX2).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
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


# An AVX2-only CPU, emulated on a newer one: PyTorch's own kernels and oneDNN's (convolutions)
# capped at AVX2. dlib, PyAV and NumPy keep what they were built for.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def emulate_avx2() -> None:
    """Run this script again with PyTorch capped at AVX2 (``--avx2`` of the benches); the
    variables must be set before torch loads, so the process replaces itself."""
    if all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})


def avx2_emulated() -> bool:
    return all(os.environ.get(k) == v for k, v in AVX2_ENV.items())


def cpu_line() -> str:
    """One line naming the CPU, its vector extensions and whether bf16 is native."""
    cpu = cpu_summary()
    extensions = " ".join(cpu["cpu_vector_extensions"]) or "none of " + "/".join(VECTOR_FLAGS)
    native = "native bf16" if cpu["cpu_native_bf16"] else "no native bf16 (bf16 is emulated)"
    capped = "; AVX2 emulated (torch and oneDNN capped)" if avx2_emulated() else ""
    return (
        f"CPU: {cpu['cpu_model']}; extensions: {extensions}; torch kernels "
        f"{cpu['cpu_capability']}; {native}{capped}"
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


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def save_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'-avx2' if avx2_emulated() else ''}.json"
    payload = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        **cpu_summary(),
        "avx2_emulated": avx2_emulated(),
        "torch_threads": _torch_threads(),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {path}")
    return path
