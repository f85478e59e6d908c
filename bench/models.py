"""Model benchmark: parameter counts, G's FLOPs per frame, and G's CPU speed per preset.

    .venv/bin/python bench/models.py [--presets tiny small-128 paper-256] [--reps 5]

For each preset: parameters of E, G, P and D; GFLOP per frame of G (counted by
``torch.utils.flop_counter``: convolutions, matmuls, attention); G's forward time per frame in
fp32 (NCHW and channels-last) and bf16 autocast, at batch 1 and 8 (medians), with 1 and all
threads. The achieved GFLOP/s is reported as a fraction of a large square matmul in the same
precision (fp32 rows: fp32 matmul), timed in alternation with G so both see the same machine
load (this CPU is shared). Writes bench/results/models.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from talkinghead.config.preset import load
from talkinghead.fileio import atomic_write_json
from talkinghead.models import build_models, count_parameters

RESULTS = Path(__file__).parent / "results" / "models.json"
MATMUL_SIZE = 2048  # 17 GFLOP per product: long enough to time, short enough to interleave
VARIANTS = ("fp32", "fp32-channels-last", "bf16-channels-last")


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_runner():
    """A closure running one fp32 square matmul, and its FLOP count."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    return (lambda: torch.mm(a, b)), 2 * MATMUL_SIZE**3


def generator_flops(generator, config) -> int:
    """FLOPs of one frame through G (batch 1), P excluded: P runs once per person."""
    size = config.image_size
    # no_grad, not inference_mode: FlopCounterMode's module hooks fail on inference tensors.
    with torch.no_grad():
        psi = generator.project(torch.zeros(1, config.embedding_dim))
        with FlopCounterMode(display=False) as counter:
            generator(torch.zeros(1, 3, size, size), psi)
    return counter.get_total_flops()


def time_variant(generator, config, batch, variant, reps, budget_s, compiled):
    """Median seconds per G forward and per matmul, measured alternately."""
    size = config.image_size
    landmarks = torch.rand(batch, 3, size, size) * 2 - 1
    channels_last = "channels-last" in variant
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = generator.to(memory_format=memory_format)
    landmarks = landmarks.contiguous(memory_format=memory_format)
    if compiled:
        net = torch.compile(net)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if variant.startswith("bf16")
        else contextlib.nullcontext()
    )
    matmul, _ = matmul_runner()  # under the autocast below, so it runs in G's precision
    with torch.inference_mode(), autocast:
        psi = generator.project(torch.rand(batch, config.embedding_dim))
        first = _seconds(lambda: net(landmarks, psi))  # warm-up: kernel selection, compilation
        steady = _seconds(lambda: net(landmarks, psi))
        reps = max(1, min(reps, int(budget_s / max(steady, 1e-6))))
        g_times, mm_times = [], []
        for _ in range(reps):
            mm_times.append(_seconds(matmul))
            g_times.append(_seconds(lambda: net(landmarks, psi)))
    generator.to(memory_format=torch.contiguous_format)
    return statistics.median(g_times), statistics.median(mm_times), reps, first


def bench_preset(name, args):
    preset = load(name)
    config = preset.model
    torch.manual_seed(0)
    embedder, generator, discriminator = build_models(config)
    generator.eval()
    gflop = generator_flops(generator, config) / 1e9
    row = {
        "preset": name,
        "image_size": config.image_size,
        "params": {
            "E": count_parameters(embedder),
            "G": count_parameters(generator),
            "P": count_parameters(generator.projection),
            "D": count_parameters(discriminator),
        },
        "psi_dim": generator.psi_dim,
        "g_gflop_per_frame": gflop,
        "timings": [],
    }
    _, mm_flops = matmul_runner()
    cells = [(t, b, v) for t in args.threads for b in args.batches for v in args.variants]
    for threads, batch, variant in cells:
        torch.set_num_threads(threads)
        g_s, mm_s, reps, first = time_variant(
            generator, config, batch, variant, args.reps, args.budget_s, args.compile
        )
        rate = gflop * batch / g_s
        matmul_rate = mm_flops / mm_s / 1e9
        row["timings"].append(
            {
                "threads": threads,
                "batch": batch,
                "variant": variant + ("+compile" if args.compile else ""),
                "ms_per_frame": 1e3 * g_s / batch,
                "gflops_per_s": rate,
                "matmul_gflops_per_s": matmul_rate,
                "fraction_of_matmul": rate / matmul_rate,
                "reps": reps,
                "first_call_s": first,
            }
        )
        _print_timing(name, row["timings"][-1])
    return row


def _print_timing(name, t):
    print(
        f"{name:>10} t{t['threads']} b{t['batch']:<2} {t['variant']:<20} "
        f"{t['ms_per_frame']:9.1f} ms/frame {t['gflops_per_s']:7.1f} GFLOP/s  "
        f"matmul {t['matmul_gflops_per_s']:6.1f}  "
        f"{100 * t['fraction_of_matmul']:5.1f}%  (median of {t['reps']})",
        flush=True,
    )


def print_summary(rows):
    print("\npreset       E (M)   G (M)   P (M)   D (M)   psi    G GFLOP/frame")
    for row in rows:
        p = {k: v / 1e6 for k, v in row["params"].items()}
        print(
            f"{row['preset']:<10} {p['E']:7.2f} {p['G']:7.2f} {p['P']:7.2f} {p['D']:7.2f} "
            f"{row['psi_dim']:6d} {row['g_gflop_per_frame']:10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small-128", "paper-256"])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per cell (max)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="fewer reps when a cell would take longer than this (paper-256 at batch 8)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--compile", action="store_true", help="torch.compile G (slow start)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, torch.get_num_threads()}),
        help="intra-op thread counts to time (a busy neighbour on a shared CPU stalls 2 threads)",
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {platform.processor() or 'cpu'}, "
        f"load average {os.getloadavg()[0]:.2f} (shared machine: expect noise)",
        flush=True,
    )
    rows = [bench_preset(name, args) for name in args.presets]
    print_summary(rows)
    result = {
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "presets": rows,
    }
    atomic_write_json(RESULTS, result)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
