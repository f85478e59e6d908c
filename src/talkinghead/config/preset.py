"""A preset bundles the per-component configs of one experiment (``presets/<name>.yaml``).

Each top-level key of a preset file is one component's section; a section left out takes that
component's defaults (the paper's values). Unknown keys anywhere are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from talkinghead.config.base import load_preset
from talkinghead.config.loss import LossConfig
from talkinghead.config.model import ModelConfig
from talkinghead.config.prep import PrepConfig
from talkinghead.config.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    prep: PrepConfig = field(default_factory=PrepConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load(name_or_path: str | Path) -> Preset:
    """Load a bundled preset by name or a YAML file by path, strictly."""
    return load_preset(Preset, name_or_path)
