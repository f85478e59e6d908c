"""Meta-learning config (paper, Sec. 3.2 and 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    variant: Literal["ft", "ff"] = "ft"  # ft: with L_MCH (fine-tunable); ff: feed-forward only
    num_shots: int = 8  # K source frames per episode (paper: 8)
    batch_size: int = 8  # episodes per optimiser step per process (paper: not published)
    lr_generator: float = 5e-5  # E, G and P (paper)
    lr_discriminator: float = 2e-4  # D and W (paper)
    beta1: float = 0.0  # Adam beta1 (lab code: 0)
    beta2: float = 0.999
    discriminator_steps: int = 2  # D updates per G update (paper: 2 (?))
    ema_decay: float = 0.999  # EMA of E and G for evaluation and export (lab code)
    max_steps: int = 100_000
    flip_probability: float = 0.5  # horizontal flip augmentation (landmarks flipped with it)
    num_workers: int = 2  # data-loader workers per process
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    log_every: int = 10  # steps between scalar logs
    sample_every: int = 500  # steps between sample grids
    checkpoint_every: int = 1000  # steps between checkpoints (also on SIGTERM/SIGINT)
    seed: int = 0
    # Collapse guard: generated images with a spatial std below this for this many logged
    # steps in a row stop the run (the constant-image collapse of public reimplementations).
    collapse_std: float = 0.02
    collapse_patience: int = 20
