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
from talkinghead.models.warp_generator import WarpGenerator, WarpOutput


class TalkingHeadModels(NamedTuple):
    embedder: Embedder  # E
    generator: Generator | WarpGenerator  # G, including P
    discriminator: Discriminator  # D, including w0 and b (not W)


def build_models(config: ModelConfig) -> TalkingHeadModels:
    """E, G and D for one model config, freshly initialised (seed the RNG first to repeat)."""
    shape = {"image_size": config.image_size, "embedding_dim": config.embedding_dim}
    return TalkingHeadModels(
        embedder=Embedder(config.embedder, **shape),
        generator=build_generator(config),
        discriminator=Discriminator(config.discriminator, **shape),
    )


def build_generator(config: ModelConfig) -> Generator | WarpGenerator:
    """G of the configured family: the paper's, or warp-and-refine."""
    shape = {"image_size": config.image_size, "embedding_dim": config.embedding_dim}
    if config.generator_type == "warp":
        return WarpGenerator(config.warp_generator, **shape)
    return Generator(config.generator, **shape)


def uses_shots(generator: nn.Module) -> bool:
    """Whether G reads the shots' pixels (warp family) or only psi (the paper's)."""
    return bool(getattr(generator, "uses_shots", False))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (spectral-norm ``u``/``v`` are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "Discriminator",
    "DiscriminatorOutput",
    "Embedder",
    "Generator",
    "TalkingHeadModels",
    "WarpGenerator",
    "WarpOutput",
    "build_generator",
    "build_models",
    "count_parameters",
    "uses_shots",
]
