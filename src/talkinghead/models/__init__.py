"""The paper's three networks: embedder E, generator G (with projection P), discriminator D.

Pure modules: no I/O, no devices, no printing. Build them from a
:class:`~talkinghead.config.model.ModelConfig` with :func:`build_models`.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from talkinghead.config.model import ModelConfig
from talkinghead.models.discriminator import Discriminator, DiscriminatorOutput
from talkinghead.models.embedder import Embedder
from talkinghead.models.generator import Generator


class TalkingHeadModels(NamedTuple):
    embedder: Embedder  # E
    generator: Generator  # G, including P
    discriminator: Discriminator  # D, including w0 and b (not W)


def build_models(config: ModelConfig) -> TalkingHeadModels:
    """E, G and D for one model config, freshly initialised (seed the RNG first to repeat)."""
    shape = {"image_size": config.image_size, "embedding_dim": config.embedding_dim}
    return TalkingHeadModels(
        embedder=Embedder(config.embedder, **shape),
        generator=Generator(config.generator, **shape),
        discriminator=Discriminator(config.discriminator, **shape),
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (spectral-norm ``u``/``v`` are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "Discriminator",
    "DiscriminatorOutput",
    "Embedder",
    "Generator",
    "TalkingHeadModels",
    "build_models",
    "count_parameters",
]
