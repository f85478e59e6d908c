"""The paper's meta-learning stage (Sec. 3.2): one generator step and D steps per episode batch.

E, G (with P) and D are wrapped in DistributedDataParallel when there are several processes.
The per-video table W (one row per training video: 150k x 512 at VoxCeleb2 scale) is kept out of
DDP: every rank holds the same replica, and each step all-gathers only the rows the global batch
touched and applies a sparse (lazy) Adam update to them, so no rank ever all-reduces the whole
table. See README, "Training at scale".
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from talkinghead.config.preset import Preset
from talkinghead.data.episodes import Episode
from talkinghead.device import autocast_dtype, resolve_precision
from talkinghead.losses import (
    LossTerms,
    discriminator_loss,
    embedding_match_terms,
    flow_terms,
    generator_adversarial_terms,
)
from talkinghead.models import build_models, uses_shots
from talkinghead.models.warp_generator import Shots
from talkinghead.training import distributed
from talkinghead.training.ema import decay_at, make_ema, update_ema


class GeneratorResult(NamedTuple):
    terms: LossTerms
    generated: Tensor  # [N,3,H,W] in [-1,1], detached


class MetaLearner(nn.Module):
    """Owns the networks, W, EMA copies and optimisers of one meta-learning run."""

    def __init__(self, preset: Preset, num_videos: int, content_loss: nn.Module, device):
        super().__init__()
        self.preset, self.train_config = preset, preset.train
        torch.manual_seed(self.train_config.seed)  # same initial weights on every rank
        models = build_models(preset.model)
        self.embedder, self.generator = models.embedder, models.generator
        self.discriminator = models.discriminator
        dim = preset.model.embedding_dim
        self.video_embeddings = nn.Embedding(num_videos, dim, sparse=True)  # W, one row per video
        nn.init.normal_(self.video_embeddings.weight, std=dim**-0.5)
        self.ema_embedder, self.ema_generator = make_ema(self.embedder), make_ema(self.generator)
        self.ema_updates = 0  # the EMA's decay warms up with this count (training/ema.py)
        self.content_loss = content_loss
        self.to(device)
        self.device = device
        self._build_optimisers()
        self._wrap_distributed()

    def _build_optimisers(self) -> None:
        config = self.train_config
        betas = (config.beta1, config.beta2)
        generator_params = [*self.embedder.parameters(), *self.generator.parameters()]
        self.optimiser_g = torch.optim.Adam(generator_params, lr=config.lr_generator, betas=betas)
        self.optimiser_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr_discriminator, betas=betas
        )
        # W is D's (its projection vectors), so it learns at D's rate, lazily row by row.
        self.optimiser_w = torch.optim.SparseAdam(
            self.video_embeddings.parameters(), lr=config.lr_discriminator, betas=betas
        )

    def _wrap_distributed(self) -> None:
        """DDP views of E, G and D (the plain modules otherwise)."""
        if distributed.is_distributed():
            wrap = lambda m: DistributedDataParallel(m, broadcast_buffers=True)  # noqa: E731
            self.ddp_embedder, self.ddp_generator = wrap(self.embedder), wrap(self.generator)
            self.ddp_discriminator = wrap(self.discriminator)
        else:
            self.ddp_embedder, self.ddp_generator = self.embedder, self.generator
            self.ddp_discriminator = self.discriminator

    def autocast(self):
        """auto: bf16 autocast on GPUs, fp32 on CPUs; bf16 when asked (talkinghead.device)."""
        device = torch.device(self.device)
        precision = resolve_precision(self.train_config.precision, device, training=True)
        dtype = autocast_dtype(precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def generator_step(self, batch: Episode) -> GeneratorResult:
        """Update E and G (and W through L_MCH): L_CNT + L_ADV (+ L_MCH for the FT variant)."""
        loss_config = self.preset.loss
        n, k = batch.source_frames.shape[:2]
        self.discriminator.requires_grad_(False)
        with self.autocast():
            # One embedder call over all N*K shots (DDP sees one forward).
            shots = self.ddp_embedder(
                batch.source_frames.flatten(0, 1), batch.source_landmarks.flatten(0, 1)
            ).view(n, k, -1)  # e_i(s_k)
            psi = self.generator.project(shots.mean(dim=1))  # psi = P e-hat_i
            generated, motion_terms = self._generate(batch, psi)
            w_rows = self.video_embeddings(batch.video_index)  # W_i
            # G is scored against D's current view; W gets no adversarial gradient here.
            condition = self.discriminator.condition(w_rows.detach())
            fake = self.discriminator(generated, batch.target_landmarks, condition)
            with torch.no_grad():
                real = self.discriminator(batch.target_frame, batch.target_landmarks, condition)
        terms = self.content_loss(
            generated.float(), batch.target_frame, landmarks=batch.target_points
        )
        terms = terms + generator_adversarial_terms(
            loss_config, fake.score.float(), real.features, fake.features
        )
        if self.train_config.variant == "ft":
            terms = terms + embedding_match_terms(loss_config, w_rows, shots.float())
        self._optimise(terms + motion_terms, self.optimiser_g)
        self.discriminator.requires_grad_(True)
        # Update EMA (its decay warms up over the first updates).
        self.ema_updates += 1
        decay = decay_at(self.train_config.ema_decay, self.ema_updates)
        update_ema(self.ema_embedder, self.embedder, decay)
        update_ema(self.ema_generator, self.generator, decay)
        return GeneratorResult(terms + motion_terms, generated.detach().float())

    def _generate(self, batch: Episode, psi: Tensor) -> tuple[Tensor, LossTerms]:
        """G's frames for the batch, and the terms only the warp family has (flow smoothness)."""
        if not uses_shots(self.generator):
            return self.ddp_generator(batch.target_landmarks, psi), LossTerms({})
        shots = Shots(batch.source_frames, batch.source_landmarks, batch.source_points, ())
        out = self.ddp_generator(batch.target_landmarks, batch.target_points, psi, shots)
        return out.image, flow_terms(self.preset.loss, out.flow_residual.float())

    def discriminator_step(self, batch: Episode, generated: Tensor) -> LossTerms:
        """Update D and W with the hinge loss on the real target and the generated frame."""
        with self.autocast():
            condition = self.discriminator.condition(self.video_embeddings(batch.video_index))
            both = self.ddp_discriminator(
                torch.cat([batch.target_frame, generated]),
                torch.cat([batch.target_landmarks, batch.target_landmarks]),
                torch.cat([condition, condition]),
            )
        real_score, fake_score = both.score.float().chunk(2)
        terms = discriminator_loss(real_score, fake_score)
        self._optimise(terms, self.optimiser_d)
        return terms

    def _optimise(self, terms: LossTerms, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        self.optimiser_w.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser.step()
        if self.video_embeddings.weight.grad is not None:
            self._sync_w_grad()
            self.optimiser_w.step()

    def _sync_w_grad(self) -> None:
        """Average W's sparse gradient over ranks by all-gathering the touched rows only."""
        grad = self.video_embeddings.weight.grad
        if not distributed.is_distributed():
            return
        # Uncoalesced: one entry per looked-up row, so every rank sends the same count.
        indices, values = distributed.all_gather_rows(grad._indices()[0], grad._values())
        world = torch.distributed.get_world_size()
        merged = torch.sparse_coo_tensor(indices[None], values / world, grad.shape)
        self.video_embeddings.weight.grad = merged.coalesce()

    def training_state(self) -> dict:
        """Everything a resumed run needs, as plain tensors and dicts."""
        return {
            "embedder": self.embedder.state_dict(),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "video_embeddings": self.video_embeddings.weight.detach().clone(),
            "ema_embedder": self.ema_embedder.state_dict(),
            "ema_generator": self.ema_generator.state_dict(),
            "optimiser_g": self.optimiser_g.state_dict(),
            "optimiser_d": self.optimiser_d.state_dict(),
            "optimiser_w": self.optimiser_w.state_dict(),
            "ema_updates": self.ema_updates,
        }

    def load_training_state(self, state: dict) -> None:
        for name in ("embedder", "generator", "discriminator", "ema_embedder", "ema_generator"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.video_embeddings.weight.copy_(state["video_embeddings"])
        for name in ("optimiser_g", "optimiser_d", "optimiser_w"):
            getattr(self, name).load_state_dict(state[name])
        # Runs saved before the warm-up existed count their optimiser steps instead.
        default = int(self.optimiser_g.state_dict()["state"].get(0, {}).get("step", 0))
        self.ema_updates = int(state.get("ema_updates", default))
