"""The paper's three networks: embedder E, generator G (with projection P), discriminator D.

Pure modules: no I/O, no devices, no printing. Build them from a
:class:`~talkinghead.config.model.ModelConfig` with :func:`build_models`.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn
from torch.nn.utils import parametrize

from talkinghead.config.model import ModelConfig
from talkinghead.models.blocks import ResBlock
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


def frozen_copy(generator: nn.Module, config: ModelConfig) -> nn.Module:
    """A copy of G for inference only: each spectrally normalised weight replaced by its value
    (W / sigma, which ``eval()`` recomputes on every forward otherwise: ~20% of a batch-1
    frame at 128 px) and each down block's conv and pool stored as one conv. The same function
    as G in ``eval()``; its weights cannot be trained or saved as a G checkpoint."""
    # A fresh G, not a deepcopy: parametrised modules of a deep copy share their class with
    # the original, and folding one would break the other.
    copy = build_generator(config).eval()
    copy.load_state_dict(generator.state_dict())
    for layer in list(copy.modules()):
        if parametrize.is_parametrized(layer):
            for name in list(layer.parametrizations):
                parametrize.remove_parametrizations(layer, name, leave_parametrized=True)
    for block in copy.modules():
        if isinstance(block, ResBlock):
            block.fix_pooling()
    return copy.requires_grad_(False)


class WeightsVersion:
    """Tells a cached copy of ``module`` that it is out of date: ``changed()`` is True once any
    of the module's parameters or buffers has been changed in place since the last call (an
    optimiser step, ``load_state_dict``). The tensors are listed once: a call reads only their
    version counters (~0.1 ms for G, where walking the module takes ~4 ms)."""

    def __init__(self, module: nn.Module):
        self.tensors = [*module.parameters(), *module.buffers()]
        self.seen = self._versions()

    def _versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.tensors)

    def changed(self) -> bool:
        versions = self._versions()
        changed, self.seen = versions != self.seen, versions
        return changed


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
    "WeightsVersion",
    "build_generator",
    "build_models",
    "count_parameters",
    "frozen_copy",
    "uses_shots",
]
