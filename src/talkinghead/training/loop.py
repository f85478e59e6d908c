"""``talkinghead train``: the meta-learning run, from one CPU process to torchrun on many GPUs.

A short orchestrator: build the data, the learner and the logger, then per step one generator
step and ``discriminator_steps`` discriminator steps. Checkpoints are written periodically and
when SIGTERM/SIGINT arrives (atomically, rank 0 only, the last few kept); ``resume`` continues
the same run with the same episodes, weights, optimiser moments, EMA, W and step, and
``resume="auto"`` does so when the run folder has a checkpoint and starts the run otherwise, so
that one command serves a first start, torchrun's ``--max-restarts`` and a Slurm requeue.
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from talkinghead.checkpoint import (
    LATEST_CHECKPOINT,
    latest_run_checkpoint,
    load_training_state,
    save_run_checkpoint,
)
from talkinghead.config.base import from_dict, save_yaml, to_dict
from talkinghead.config.preset import Preset
from talkinghead.data.episodes import EpisodeDataset
from talkinghead.data.sampling import StepBatchSampler
from talkinghead.device import keep_freed_memory
from talkinghead.errors import UserError
from talkinghead.losses import LossTerms
from talkinghead.training import distributed
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.logger import NullLogger, RunLogger
from talkinghead.training.meta_learning import MetaLearner


class TrainingStopped(UserError):
    """Training cannot go on (a NaN/Inf loss, a collapse): the message says why and where."""


@dataclass
class RunResult:
    step: int
    checkpoint: Path | None
    stopped_by_signal: bool


CHECKPOINT_NAME = LATEST_CHECKPOINT
ResumeMode = bool | Literal["auto"]


def train(
    preset: Preset,
    data_root: str | Path,
    run_dir: str | Path,
    resume: ResumeMode = False,
    progress: bool = True,
    vgg19: str | None = None,
    vggface: str | None = None,
    device: str = "auto",
    log=print,
    keep_checkpoints: int = 2,
) -> RunResult:
    """Run (or resume) meta-learning until ``preset.train.max_steps``.

    ``resume``: False starts a run (an existing one is an error), True continues one (a missing
    one is an error), "auto" continues one if there is a checkpoint and starts one otherwise.
    ``keep_checkpoints``: how many ``checkpoint-<step>.pt`` to keep.
    """
    run_dir = Path(run_dir)
    dist = distributed.init_distributed(device)
    if dist.device.type == "cpu":
        keep_freed_memory()
    config = preset.train
    data = EpisodeDataset(
        data_root, config.num_shots, preset.model.image_size, config.flip_probability, config.seed
    )
    checkpoint_path = run_dir / CHECKPOINT_NAME  # the latest of the kept checkpoints
    state = _resume_state(run_dir, resume, preset, data, dist)
    step = state["step"] if state else 0
    content_loss, description = build_training_content_loss(preset.loss, vgg19, vggface)
    learner = MetaLearner(preset, data.num_videos, content_loss, dist.device)
    if state:
        learner.load_training_state(state["learner"])
        _set_rng_state(state["rng"])
    logger = _open_logger(run_dir, preset, data, dist)
    _log0(dist, log, f"train: {description}")
    _log0(
        dist,
        log,
        f"train: {data.num_videos} videos, {dist.world_size} process(es) on "
        f"{dist.device}, variant {config.variant}, step {step} -> {config.max_steps}",
    )
    loader = _loader(data, config, dist, step)
    stopper = SignalFlag()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        unit="step",
        desc="train",
        disable=not (progress and dist.is_main),
        dynamic_ncols=True,
    )
    collapse_count, start, batch_iter = 0, time.perf_counter(), iter(loader)
    try:
        while step < config.max_steps:
            batch = _to_device(next(batch_iter), dist.device)
            learner.train()
            result = learner.generator_step(batch)
            d_terms = [
                learner.discriminator_step(batch, result.generated)
                for _ in range(config.discriminator_steps)
            ]
            step += 1
            bar.update()
            _check_finite(step, g=result.terms, d=d_terms[-1])
            if step % config.log_every == 0 or step == config.max_steps:
                scalars = {
                    **_prefixed("g/", result.terms.scalars()),
                    **_prefixed("d/", d_terms[-1].scalars()),
                }
                spread = float(result.generated.flatten(2).std(dim=2).mean())
                collapse_count = collapse_count + 1 if spread < config.collapse_std else 0
                if collapse_count >= config.collapse_patience:
                    raise TrainingStopped(
                        f"generated images have collapsed to constants (spatial std {spread:.4f} "
                        f"for {collapse_count} logs in a row) at step {step}; lower the learning "
                        "rates or check the data"
                    )
                rate = (step - (state["step"] if state else 0)) / (time.perf_counter() - start)
                logger.scalars(step, {**scalars, "output_std": spread, "steps_per_s": rate})
                bar.set_postfix(g=f"{scalars['g/total']:.3f}", d=f"{scalars['d/total']:.3f}")
            if step % config.sample_every == 0 or step == config.max_steps:
                logger.samples(step, batch.target_landmarks, batch.target_frame, result.generated)
            stop = distributed.broadcast_flag(stopper.raised, dist.device)
            if stop or step % config.checkpoint_every == 0 or step == config.max_steps:
                _save(run_dir, keep_checkpoints, learner, step, preset, data, dist)
            if stop:
                _log0(
                    dist,
                    log,
                    f"train: stopped by {stopper.name} at step {step}; checkpoint -> "
                    f"{checkpoint_path} (continue with --resume)",
                )
                return RunResult(step, checkpoint_path, True)
    finally:
        bar.close()
        logger.close()
        stopper.restore()
    _log0(dist, log, f"train: done at step {step}; checkpoint -> {checkpoint_path}")
    return RunResult(step, checkpoint_path, False)


def _log0(dist, log, message: str) -> None:
    if dist.is_main:
        log(message)


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {prefix + k: v for k, v in values.items()}


def _check_finite(step: int, **groups: LossTerms) -> None:
    """Stop at the first NaN/Inf loss, naming the term, instead of training on garbage.

    One device sync per step: the totals are checked together; terms only when one fails.
    """
    totals = torch.stack([terms.total.detach().float() for terms in groups.values()])
    if bool(torch.isfinite(totals).all()):
        return
    for prefix, terms in groups.items():
        for name, value in terms.terms.items():
            if not math.isfinite(float(value.detach())):
                raise TrainingStopped(
                    f"loss term {prefix}/{name} is {float(value.detach())} at step {step}"
                )
    raise TrainingStopped(f"the total loss is not finite at step {step}")


def _loader(data: EpisodeDataset, config, dist, step: int) -> torch.utils.data.DataLoader:
    sampler = StepBatchSampler(
        data.num_videos, config.batch_size, dist.rank, dist.world_size, config.seed, step
    )
    return torch.utils.data.DataLoader(
        data,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=config.num_workers > 0,
        prefetch_factor=4 if config.num_workers > 0 else None,
    )


def _to_device(batch, device: torch.device):
    return type(batch)(*(t.to(device, non_blocking=True) for t in batch))


def _open_logger(run_dir: Path, preset: Preset, data: EpisodeDataset, dist):
    if not dist.is_main:
        return NullLogger()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(preset, run_dir / "config.yaml")
    return RunLogger(run_dir)


def _save(run_dir: Path, keep: int, learner: MetaLearner, step, preset, data, dist) -> None:
    if dist.is_main:
        save_run_checkpoint(
            run_dir,
            {
                "step": step,
                "config": to_dict(preset),
                "video_ids": list(data.video_ids),
                "learner": learner.training_state(),
                "rng": _rng_state(),
            },
            keep,
        )
    distributed.barrier()


def _resume_state(run_dir: Path, resume: ResumeMode, preset, data, dist) -> dict | None:
    """The checkpoint to continue from, or None to start the run (see :func:`train`)."""
    if resume not in (True, False, "auto"):
        raise UserError(f"resume must be True, False or 'auto', got {resume!r}")
    path = latest_run_checkpoint(run_dir)
    # Every rank reads the checkpoint rank 0 wrote: they must all see the same run folder.
    seen_by_any = distributed.broadcast_flag(path is not None, dist.device)
    seen_by_all = not distributed.broadcast_flag(path is None, dist.device)
    if seen_by_any != seen_by_all:
        raise UserError(
            f"{run_dir}: some processes see a checkpoint there and some do not; the run folder "
            "must be on a filesystem that every node shares"
        )
    if resume == "auto":
        resume = path is not None
    if not resume and path is not None:
        raise UserError(
            f"{run_dir}: holds a run already; pass --resume (or --resume auto) or choose a new "
            "folder"
        )
    if resume and path is None:
        raise UserError(f"{run_dir}: nothing to resume (no checkpoint in this run folder)")
    return _load_resume_state(path, preset, data) if resume else None


def _load_resume_state(path: Path, preset: Preset, data: EpisodeDataset) -> dict:
    state = load_training_state(path)
    saved = from_dict(Preset, state["config"], where=str(path))
    if to_dict(saved.model) != to_dict(preset.model) or to_dict(saved.loss) != to_dict(preset.loss):
        raise UserError(f"{path}: the run was made with another model or loss config")
    if state["video_ids"] != list(data.video_ids):
        raise UserError(f"{path}: the run was made on another dataset (its videos differ)")
    return state


def _rng_state() -> dict:
    """Global RNG states (the data draws do not use them, but user code and init might)."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": (version, list(python_state), gauss_next),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))


class SignalFlag:
    """Turns SIGTERM/SIGINT into a flag checked between steps (then checkpoint and exit)."""

    def __init__(self):
        self.raised, self.name = False, ""
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, signum, frame) -> None:
        self.raised, self.name = True, signal.Signals(signum).name

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
