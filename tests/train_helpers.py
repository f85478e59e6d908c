"""Shared bits of the training tests: a fast preset and a tiny real dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from talkinghead.config import preset as presets
from talkinghead.config.base import to_dict

# The tiny networks; pixel-only content loss (the identity net's 150 px chips would dominate
# the step time), one D step per G step, no data workers: about 0.1 s per step on 2 cores.
FAST = {
    "loss": {"identity_features": 0.0, "identity_descriptor": 0.0},
    "train": {
        "batch_size": 2,
        "num_shots": 2,
        "num_workers": 0,
        "log_every": 1,
        "sample_every": 1000,
        "checkpoint_every": 1000,
        "discriminator_steps": 1,
        "max_steps": 10,
    },
}


def fast_preset(name: str = "tiny", **train_overrides) -> presets.Preset:
    """The tiny networks of a family (``tiny``: the paper's G; ``tiny-warp``: warp-and-refine)."""
    preset = presets.load(name)
    loss = dataclasses.replace(preset.loss, **FAST["loss"])
    train = dataclasses.replace(preset.train, **{**FAST["train"], **train_overrides})
    return dataclasses.replace(preset, loss=loss, train=train)


def write_preset(path: Path, name: str = "tiny", **train_overrides) -> Path:
    path.write_text(yaml.safe_dump(to_dict(fast_preset(name, **train_overrides))))
    return path
