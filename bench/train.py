"""Meta-learning step speed and memory per preset, on this machine's CPU (or a GPU if present).

    .venv/bin/python bench/train.py [--presets small-128 paper-256] [--batch 2] [--reps 3]

One step = one generator step + the preset's D steps, on synthetic episodes of the preset's
size (speed does not depend on the pixels). Reported: median seconds per step, samples
(episodes) per second, model FLOPs per step (forward + backward, counted by FlopCounterMode),
achieved FLOP/s as a ratio of a square matmul timed in the same run, and peak memory (RSS on
CPU, allocator peak on GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import time

import torch
from common import print_table, save_results
from torch.utils.flop_counter import FlopCounterMode

from talkinghead.config import preset as presets
from talkinghead.data.episodes import Episode
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.meta_learning import MetaLearner


def synthetic_batch(batch: int, shots: int, size: int, device) -> Episode:
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(device)  # noqa: E731
    points = (torch.rand(batch, 68, 2, generator=g) * 0.5 + 0.25) * size
    return Episode(
        rand(batch, shots, 3, size, size),
        rand(batch, shots, 3, size, size),
        rand(batch, 3, size, size),
        rand(batch, 3, size, size),
        points.to(device),
        torch.zeros(batch, dtype=torch.long, device=device),
    )


def step(learner: MetaLearner, batch: Episode) -> None:
    result = learner.generator_step(batch)
    for _ in range(learner.train_config.discriminator_steps):
        learner.discriminator_step(batch, result.generated)


def matmul_flops_per_s(device, dtype) -> float:
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times)


def bench(name: str, batch: int, reps: int, device) -> dict:
    preset = presets.load(name)
    preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, batch_size=batch))
    content, description = build_training_content_loss(preset.loss)
    learner = MetaLearner(preset, 16, content, device)
    data = synthetic_batch(batch, preset.train.num_shots, preset.model.image_size, device)
    step(learner, data)  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(learner, data)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step(learner, data)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = counter.get_total_flops()
    bf16 = device.type == "cuda"
    reference = matmul_flops_per_s(device, torch.bfloat16 if bf16 else torch.float32)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "preset": name,
        "batch": batch,
        "K": preset.train.num_shots,
        "s/step": seconds,
        "samples/s": batch / seconds,
        "TFLOP/step": flops / 1e12,
        "MFU vs matmul": flops / seconds / reference,
        "peak GiB": peak,
        "content loss": description.split(" (")[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small-128", "paper-256"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [bench(name, args.batch, args.reps, device) for name in args.presets]
    print(f"device: {device}, {torch.get_num_threads()} threads")
    print_table(
        rows,
        ["preset", "batch", "K", "s/step", "samples/s", "TFLOP/step", "MFU vs matmul", "peak GiB"],
    )
    save_results("train", {"device": str(device), "runs": rows})


if __name__ == "__main__":
    main()
