"""Few-shot fine-tuning of G and D on a new person (paper, Sec. 3.4).

G' starts from the meta-learned G with its AdaIN parameters psi' = P e_new trained as free
parameters (E and P are no longer used); D' starts from D with the projection vector
w' = w0 + e_new. G' minimises L_CNT + L_ADV (with feature matching), D' the hinge loss, on the T
shots of the person.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from talkinghead.config.loss import LossConfig
from talkinghead.losses import (
    LossTerms,
    discriminator_loss,
    flow_terms,
    generator_adversarial_terms,
)
from talkinghead.models import Discriminator, Generator, WarpGenerator, uses_shots
from talkinghead.models.warp_generator import Shots

# Warp family: each fine-tuning target is rendered from at most this many of the other shots.
MAX_SOURCE_SHOTS = 8


@dataclass(frozen=True)
class FineTuneConfig:
    steps: int | None = None  # None: default_steps(num_shots)
    batch_size: int = 2  # shots per step (drawn at random when T is larger)
    # The paper gives no fine-tuning rates. Meta-learning's (5e-5 / 2e-4) barely move G in a
    # CPU budget: on the sample clip (T=8, 60 steps, small-128) hold-out SSIM was 0.26 at 5e-5,
    # 0.39 at 3e-4 and 0.42 at 1e-3. 5e-4 keeps a margin for the longer default schedules.
    lr_generator: float = 5e-4
    lr_discriminator: float = 2e-3
    beta1: float = 0.0
    beta2: float = 0.999
    patience: int = 40  # early stop: steps without a 1% better smoothed content loss
    seed: int = 0


def default_steps(num_shots: int) -> int:
    """~125 steps for 1 shot rising to ~230 for 30+ (the lab's guidance)."""
    return round(125 + 105 * min(max(num_shots - 1, 0), 29) / 29)


@dataclass
class FineTuneResult:
    psi: Tensor  # [psi_dim] psi'
    generator: Generator | WarpGenerator  # G', eval mode
    steps: int  # steps run (early stop may end before the budget)
    content_losses: list[float]  # per step


class _EarlyStop:
    """Stops when the smoothed loss has not improved by ``min_delta`` (relative) for a while."""

    def __init__(self, patience: int, min_delta: float = 0.01, smoothing: float = 0.9):
        self.patience, self.min_delta, self.smoothing = patience, min_delta, smoothing
        self.average, self.best, self.since_best = math.nan, math.inf, 0

    def update(self, value: float) -> bool:
        is_first = math.isnan(self.average)
        self.average = (
            value if is_first else self.smoothing * self.average + (1 - self.smoothing) * value
        )
        if self.average < self.best * (1 - self.min_delta):
            self.best, self.since_best = self.average, 0
        else:
            self.since_best += 1
        return self.since_best >= self.patience


def finetune(
    generator: Generator | WarpGenerator,
    discriminator: Discriminator,
    content_loss: nn.Module,
    loss_config: LossConfig,
    shots: tuple[Tensor, Tensor, Tensor],
    embedding: Tensor,
    config: FineTuneConfig = FineTuneConfig(),
    progress: bool = True,
) -> FineTuneResult:
    """Fine-tune copies of G and D on ``shots`` = (frames, landmark images, points).

    ``frames``, ``landmark images`` [T,3,S,S] in [-1,1], ``points`` [T,68,2]; ``embedding``
    e_new [embedding_dim]. The given modules are not modified.

    The warp family renders each target shot from the *other* shots (leave one out: copying the
    target itself would teach nothing); with a single shot it is its own source.
    """
    frames, landmark_images, points = shots
    # Training runs in the default layout (inference may hold G in channels-last).
    g = copy.deepcopy(generator).to(memory_format=torch.contiguous_format).train()
    d = copy.deepcopy(discriminator).train()
    with torch.no_grad():
        psi = nn.Parameter(g.project(embedding[None])[0].clone())  # psi' = P e_new
        w = nn.Parameter(d.condition(embedding[None])[0].clone())  # w' = w0 + e_new
    g.projection.requires_grad_(False)  # P is dropped: psi' replaces it
    betas = (config.beta1, config.beta2)
    trainable_g = [p for p in g.parameters() if p.requires_grad] + [psi]
    optimiser_g = torch.optim.Adam(trainable_g, lr=config.lr_generator, betas=betas)
    optimiser_d = torch.optim.Adam([*d.parameters(), w], lr=config.lr_discriminator, betas=betas)
    steps = config.steps if config.steps is not None else default_steps(len(frames))
    rng, stop, history = np.random.default_rng(config.seed), _EarlyStop(config.patience), []
    for _ in tqdm(range(steps), desc="fine-tune", unit="step", disable=not progress):
        pick = torch.from_numpy(rng.choice(len(frames), min(config.batch_size, len(frames)), False))
        x, y, lm = frames[pick], landmark_images[pick], points[pick]
        condition = w.expand(len(pick), -1)
        # Generator step (D' frozen, scored against its current view).
        d.requires_grad_(False)
        fake, motion_terms = _generate(g, psi, shots, pick, rng, loss_config)
        fake_out = d(fake, y, condition.detach())
        with torch.no_grad():
            real_out = d(x, y, condition)
        content = content_loss(fake, x, landmarks=lm)
        terms = content + motion_terms
        terms = terms + generator_adversarial_terms(
            loss_config, fake_out.score, real_out.features, fake_out.features
        )
        optimiser_g.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser_g.step()
        d.requires_grad_(True)
        # Discriminator step (hinge) on the real shots and the generated frames.
        both = d(torch.cat([x, fake.detach()]), torch.cat([y, y]), torch.cat([condition] * 2))
        real_score, fake_score = both.score.chunk(2)
        optimiser_d.zero_grad(set_to_none=True)
        discriminator_loss(real_score, fake_score).total.backward()
        optimiser_d.step()
        history.append(float(content.total.detach()))
        if stop.update(history[-1]):
            break
    return FineTuneResult(psi.detach(), g.eval(), len(history), history)


def _generate(g, psi: Tensor, shots, pick: Tensor, rng: np.random.Generator, loss_config):
    """G's frames for the picked shots, and the warp family's flow term."""
    frames, landmark_images, points = shots
    psi = psi.expand(len(pick), -1)
    if not uses_shots(g):
        return g(landmark_images[pick], psi), LossTerms({})
    sources = torch.from_numpy(np.stack([_other_shots(len(frames), int(i), rng) for i in pick]))
    source_shots = Shots(frames[sources], landmark_images[sources], points[sources], ())
    out = g(landmark_images[pick], points[pick], psi, source_shots)
    return out.image, flow_terms(loss_config, out.flow_residual)


def _other_shots(count: int, target: int, rng: np.random.Generator) -> np.ndarray:
    """Up to MAX_SOURCE_SHOTS shots other than ``target`` (the target itself when alone)."""
    if count == 1:
        return np.array([target])
    others = np.delete(np.arange(count), target)
    return rng.choice(others, min(len(others), MAX_SOURCE_SHOTS), replace=False)
