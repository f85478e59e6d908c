"""Export a training run to an inference bundle: EMA E and G (with P), D's backbone and w0.

The per-video table W is left out (it only describes the training videos); D and w0 stay so
that a new person can be fine-tuned with the paper's w' = w0 + e_new initialisation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from talkinghead.checkpoint import load_training_state, save_weights
from talkinghead.config.base import from_dict
from talkinghead.config.preset import Preset
from talkinghead.errors import UserError
from talkinghead.models import build_models


def export_bundle(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """Write ``out`` (safetensors) from a training checkpoint (a file, or a run folder)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoint.pt"
    state = load_training_state(checkpoint)
    try:
        preset = from_dict(Preset, state["config"], where=str(checkpoint))
        learner = state["learner"]
    except KeyError as exc:
        raise UserError(f"{checkpoint}: not a talkinghead training checkpoint ({exc})") from None
    models = build_models(preset.model)
    models.embedder.load_state_dict(learner["ema_embedder"])
    models.generator.load_state_dict(learner["ema_generator"])
    models.discriminator.load_state_dict(learner["discriminator"])
    extra = {
        "step": state["step"],
        "variant": preset.train.variant,
        "num_training_videos": len(state["video_ids"]),
        "source": hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16],
    }
    modules = {
        "embedder": models.embedder,
        "generator": models.generator,
        "discriminator": models.discriminator,
    }
    save_weights(out, modules, preset, extra, half=half)
    return Path(out)
