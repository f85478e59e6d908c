"""``talkinghead distill``: a narrower warp-and-refine decoder taught by a trained bundle.

The student shares everything with the teacher but the decoder (``fuse``, the bottleneck, the
upsampling blocks, their skips, the output conv) and P, whose rows follow the decoder's AdaIN
layers. What it shares is copied and frozen: E, D, both encoders, the motion net and the
pose prior, so the warped shots and their blending weights are the teacher's exactly. The
decoder starts from the teacher's (same-shaped tensors copied, narrower ones as their leading
channels) and learns to give the teacher's frames and masks (L1 on both) on episodes of the
training people, with 1-8 shots per batch so that both the one-photo and the many-shot use are
covered. Only the student's EMA decoder is exported, with the teacher's E and D, as a bundle
any command loads.

Distillation is how a faster default model is made without another meta-learning run: the
decoder is 80% of the render time at 128 px, and the teacher's frames are a dense target
(every pixel, every step) where the adversarial run has a noisy one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from talkinghead.checkpoint import (
    check_model_config,
    latest_run_checkpoint,
    load_training_state,
    load_weights,
    read_info,
    save_run_checkpoint,
    save_weights,
)
from talkinghead.config.base import from_dict, to_dict
from talkinghead.config.preset import Preset
from talkinghead.data.episodes import Episode, EpisodeDataset
from talkinghead.device import keep_freed_memory
from talkinghead.errors import UserError
from talkinghead.models import build_generator, build_models
from talkinghead.models.blocks import AdaptiveInstanceNorm
from talkinghead.models.warp_generator import WarpGenerator
from talkinghead.training.ema import decay_at, make_ema, update_ema
from talkinghead.training.loop import SignalFlag

# Modules of the warp generator the student takes from the teacher unchanged (and freezes).
SHARED_MODULES = ("shot_encoder", "target_encoder", "motion")
DECODER_FIELDS = ("decoder_channels", "num_bottleneck_blocks")  # what a student may change
MASK_WEIGHT = 1.0  # L1 on the mask, beside L1 on the frame
SPECTRAL_WEIGHT = ".parametrizations.weight.original"  # a spectrally normalised layer's weight
POWER_ITERATIONS = 100  # to estimate a narrowed layer's spectral norm at the start


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    steps: int = 1500
    batch_size: int = 8
    max_shots: int = 8  # each batch draws K in 1..max_shots
    lr: float = 3e-4  # Adam, cosine decay to 0 over ``steps``
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    seed: int = 0


def student_preset(teacher: Preset, student: Preset, teacher_path: Path) -> Preset:
    """The student's preset: the teacher's, with the student's warp decoder settings.

    Only the decoder may differ (E, D and the encoders are the teacher's): any other model
    field that differs is a one-line error naming it.
    """
    if teacher.model.generator_type != "warp" or student.model.generator_type != "warp":
        raise UserError(f"{teacher_path}: distillation needs warp-family models on both sides")
    ours, theirs = student.model.warp_generator, teacher.model.warp_generator
    decoder = {name: getattr(ours, name) for name in DECODER_FIELDS}
    teachers_decoder = {name: getattr(theirs, name) for name in DECODER_FIELDS}
    rest = dataclasses.replace(ours, **teachers_decoder)
    check_model_config(
        teacher_path, teacher.model, dataclasses.replace(student.model, warp_generator=rest)
    )
    warp = dataclasses.replace(theirs, **decoder)
    return dataclasses.replace(
        teacher, model=dataclasses.replace(teacher.model, warp_generator=warp)
    )


@torch.no_grad()
def init_student(student: WarpGenerator, teacher: WarpGenerator) -> None:
    """Copy the teacher's weights into the student.

    Same-shaped tensors are copied as they are; narrower ones take the teacher's leading
    channels (consistently, so channel c of one layer feeds channel c of the next), and the
    spectral norm of a narrowed layer is estimated afresh (power iteration to convergence). P's
    rows are copied per AdaIN layer by name (scales, then shifts).
    """
    theirs = teacher.state_dict()
    state = student.state_dict()
    narrowed = []
    for key, value in state.items():
        source = theirs.get(key)
        if source is None or source.dim() != value.dim():
            continue
        if source.shape == value.shape:
            value.copy_(source)
        elif not key.endswith(("._u", "._v")) and all(
            a <= b for a, b in zip(value.shape, source.shape)
        ):
            value.copy_(source[tuple(slice(0, n) for n in value.shape)])
            if key.endswith(SPECTRAL_WEIGHT):
                narrowed.append(key[: -len(SPECTRAL_WEIGHT)])
    rows = _projection_rows(student, teacher)
    state["projection" + SPECTRAL_WEIGHT].copy_(theirs["projection" + SPECTRAL_WEIGHT][rows])
    state["projection.bias"].copy_(theirs["projection.bias"][rows])
    student.load_state_dict(state)
    for name in narrowed:
        module = student.get_submodule(name)
        training = module.training
        module.train()  # in training mode every read of the weight runs one power iteration
        for _ in range(POWER_ITERATIONS):
            module.weight  # noqa: B018
        module.train(training)


def _projection_rows(student: WarpGenerator, teacher: WarpGenerator) -> Tensor:
    """For each row of the student's psi, the teacher's row for the same AdaIN channel."""
    offsets, offset = {}, 0
    for name, module in teacher.named_modules():
        if isinstance(module, AdaptiveInstanceNorm):
            offsets[name] = (offset, module.channels)
            offset += module.num_adain_params
    rows = []
    for name, module in student.named_modules():
        if not isinstance(module, AdaptiveInstanceNorm):
            continue
        start, channels = offsets.get(name, (None, 0))
        if start is None or module.channels > channels:
            raise UserError(f"the student's AdaIN layer {name} has no counterpart in the teacher")
        scales = torch.arange(module.channels) + start
        rows += [scales, scales + channels]
    return torch.cat(rows)


def distill(
    teacher_path: str | Path,
    student_config: Preset,
    data_dir: str | Path,
    run_dir: str | Path,
    out: str | Path,
    options: DistillOptions = DistillOptions(),
    progress: bool = True,
    log=print,
) -> Path | None:
    """Train the student against ``teacher_path`` on ``data_dir`` and write the bundle ``out``.

    Resumes from ``run_dir``'s checkpoint when there is one (same teacher and student config).
    SIGTERM/SIGINT save a checkpoint and return None (no bundle).
    """
    keep_freed_memory()
    teacher_path, run_dir = Path(teacher_path), Path(run_dir)
    info = read_info(teacher_path)
    if info.config_type != "Preset":
        raise UserError(f"{teacher_path}: a bundle with its preset is needed (got a bare config)")
    teacher_preset = from_dict(Preset, info.config, where=str(teacher_path))
    preset = student_preset(teacher_preset, student_config, teacher_path)
    models = build_models(teacher_preset.model)
    load_weights(teacher_path, dict(models._asdict()))
    embedder, teacher = models.embedder.eval(), models.generator.eval()
    embedder.requires_grad_(False)
    teacher.requires_grad_(False)
    torch.manual_seed(options.seed)
    student = build_generator(preset.model)
    init_student(student, teacher)
    for name in SHARED_MODULES:
        getattr(student, name).requires_grad_(False)
    student.log_pose_temperature.requires_grad_(False)
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=options.lr, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / options.steps, 1.0)))
    )
    ema = make_ema(student)
    step = 0
    teacher_digest = hashlib.sha256(teacher_path.read_bytes()).hexdigest()[:16]
    checkpoint = latest_run_checkpoint(run_dir)
    if checkpoint is not None:
        state = load_training_state(checkpoint)
        if state["teacher"] != teacher_digest or state["config"] != to_dict(preset):
            raise UserError(f"{checkpoint}: made with another teacher or student config")
        student.load_state_dict(state["student"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step = state["step"]
        log(f"distill: resuming {run_dir} at step {step}")
    data = EpisodeDataset(
        data_dir, options.max_shots, preset.model.image_size, preset.train.flip_probability
    )
    student.train()
    for name in SHARED_MODULES:
        getattr(student, name).eval()  # frozen: no power iteration, the teacher's weights
    for module in (teacher, student, ema):
        module.to(memory_format=torch.channels_last)
    log(
        f"distill: {teacher_path} -> {out}; decoder {preset.model.warp_generator.decoder_channels}"
        f", {preset.model.warp_generator.num_bottleneck_blocks} bottleneck block(s); "
        f"{sum(p.numel() for p in parameters):,} parameters trained on {data.num_videos} videos"
    )

    def save() -> None:
        state = {
            "step": step,
            "teacher": teacher_digest,
            "config": to_dict(preset),
            "student": student.state_dict(),
            "ema": ema.state_dict(),
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
        }
        save_run_checkpoint(run_dir, state, keep=1)

    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([options.seed, step])
    bar = tqdm(total=options.steps, initial=step, unit="step", disable=not progress)
    recent: list[float] = []
    started = time.perf_counter()
    signals = SignalFlag()
    while step < options.steps and not signals.raised:
        batch = _batch(data, rng, options, step)
        shots = int(rng.integers(1, options.max_shots + 1))
        loss = _loss(student, teacher, embedder, batch, shots)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        update_ema(ema, student, decay_at(options.ema_decay, step))
        recent = [*recent[-49:], loss.item()]
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(recent):.4f}", shots=shots)
        if step % options.checkpoint_every == 0 or step == options.steps:
            save()
    bar.close()
    signals.restore()
    if signals.raised:
        save()
        log(f"distill: stopped by {signals.name} at step {step}; checkpoint in {run_dir}")
        return None
    extra = {
        "step": step,
        "variant": teacher_preset.train.variant,
        "distilled_from": teacher_digest,
        "teacher_extra": info.extra,
    }
    modules = {"embedder": embedder, "generator": ema, "discriminator": models.discriminator}
    save_weights(out, modules, preset, extra, half=info.dtype == "float16")
    minutes = (time.perf_counter() - started) / 60
    log(f"distill: {step} steps ({minutes:.1f} min this run); bundle -> {out}")
    return Path(out)


def _batch(data: EpisodeDataset, rng: np.random.Generator, options: DistillOptions, step: int):
    """``batch_size`` episodes of uniformly drawn videos (fresh draws every step)."""
    videos = rng.integers(data.num_videos, size=options.batch_size)
    items = [data[int(v), step * options.batch_size + i] for i, v in enumerate(videos)]
    return Episode(*(torch.stack(field) for field in zip(*items)))


def _loss(
    student: WarpGenerator, teacher: WarpGenerator, embedder: nn.Module, batch: Episode, k: int
) -> Tensor:
    """L1 to the teacher's frame and mask for one batch with the first ``k`` shots."""
    frames = batch.source_frames[:, :k].contiguous()
    drawings = batch.source_landmarks[:, :k].contiguous()
    points = batch.source_points[:, :k].contiguous()
    n = frames.shape[0]
    targets = batch.target_landmarks, batch.target_points
    with torch.no_grad():
        embedding = embedder(frames.flatten(0, 1), drawings.flatten(0, 1)).view(n, k, -1).mean(1)
        shots = teacher.encode_shots(frames, drawings, points)
        wanted = teacher(*targets, teacher.project(embedding), shots)
    out = student(*targets, student.project(embedding), shots)
    return F.l1_loss(out.image, wanted.image) + MASK_WEIGHT * F.l1_loss(out.mask, wanted.mask)
