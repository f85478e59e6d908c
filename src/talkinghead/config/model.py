"""Network shapes: embedder E, generator G (with projection P) and discriminator D.

Defaults are the paper's 256 px networks (Zakharov et al. 2019, Sec. 3.2 and the appendix),
with widths chosen so the parameter counts land on the paper's: E ~15M, G ~38M (P ~6.7M),
D ~20M. Resolution, channel schedules and where self-attention sits are config, never code:
``small-128`` and ``tiny`` presets reuse the same modules with other numbers.

Each channel tuple has one entry per residual block; every down block halves the resolution and
every up block doubles it, so the tuple lengths fix the resolutions along the way.

How the paper-256 counts come out (3x3 convs dominate: 9 * C_in * C_out each; M = 1e6):
  E 14.91M = blocks 0.04 + 0.23 + 0.92 + 3.67 + 4.98 + 4.98, attention at 32 px 0.08.
  G 38.08M = encoder 4.94 (incl. attention) + bottleneck 4 x 4.72 + decoder 7.56 (blocks
    4.98 + 1.90 + 0.48 + 0.12, attention at 64 px 0.08) + P 6.70 (512 x 13,056 + bias).
    psi = 2 x (4 x (512 + 512) + (512 + 512) + (512 + 256) + (256 + 128) + (128 + 64) + 64)
    = 13,056 AdaIN scales and shifts, derived from the blocks at run time.
  D 19.63M = E's layout 14.91 + the extra 512-channel block at 4x4 4.72 (+ w0, b).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from talkinghead.errors import UserError


@dataclass(frozen=True)
class EmbedderConfig:
    # Paper: downsampling residual blocks 256 -> 4 px, channels 64,128,256,512,512,512, no norm.
    channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    # SAGAN self-attention after the block whose output has this resolution (paper: 32x32).
    attention_resolutions: tuple[int, ...] = (32,)


@dataclass(frozen=True)
class GeneratorConfig:
    # Encoder: downsampling blocks with instance norm 256 -> 16 px (paper, after Johnson et al.).
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512)
    # Bottleneck: residual blocks with AdaIN at the encoder's last resolution (paper: 4).
    num_bottleneck_blocks: int = 4
    # Decoder: upsampling blocks with AdaIN back to full size. 512,256,128,64 is the lab layout
    # that gives the paper's psi length of 13,056 and G's ~38M parameters.
    decoder_channels: tuple[int, ...] = (512, 256, 128, 64)
    encoder_attention_resolutions: tuple[int, ...] = (32,)  # paper: 32x32 in down paths
    decoder_attention_resolutions: tuple[int, ...] = (64,)  # paper: 64x64 in G's up path (?)


@dataclass(frozen=True)
class WarpGeneratorConfig:
    """The warp-and-refine generator (``models/warp_generator.py``; not in the paper)."""

    # Shot and target encoders: downsampling blocks; each output scale is warped and blended.
    feature_channels: tuple[int, ...] = (32, 64)  # 128 px -> 64, 32
    # Decoder: the first entry is the bottleneck width at the deepest scale; each further entry
    # is an upsampling AdaIN block, so len(decoder_channels) = len(feature_channels) + 1.
    decoder_channels: tuple[int, ...] = (96, 48, 32)
    num_bottleneck_blocks: int = 2
    flow_size: int = 32  # resolution of the analytic map, the motion net and the blend weights
    motion_channels: int = 16
    num_motion_blocks: int = 1
    flow_residual_scale: float = 0.1  # the motion net's output times this, in grid units
    pose_temperature: float = 30.0  # initial sharpness of the closest-pose prior over shots


@dataclass(frozen=True)
class DiscriminatorConfig:
    # V(x, y): the embedder's layout ...
    channels: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    # ... plus one residual block at the last resolution (4x4 in the paper).
    num_extra_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (32,)


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 256  # paper: 256x256 frames
    embedding_dim: int = 512  # e-hat, w0, W_i in R^512 (paper)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # "paper": G synthesises from the landmark image (the reproduction); "warp": the
    # warp-and-refine family, configured by ``warp_generator`` (``generator`` is then unused).
    generator_type: Literal["paper", "warp"] = "paper"
    warp_generator: WarpGeneratorConfig = field(default_factory=WarpGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        # Fail at load time with the field's name, not later with a shape error inside a conv.
        for name, section in (("embedder", self.embedder), ("discriminator", self.discriminator)):
            _check_down_path(f"model.{name}", self.image_size, section.channels)
            _check_attention(
                f"model.{name}.attention_resolutions",
                section.attention_resolutions,
                down_sizes(self.image_size, len(section.channels)),
            )
            if section.channels[-1] != self.embedding_dim:
                raise UserError(
                    f"model.{name}.channels ends with {section.channels[-1]}, but embedding_dim is "
                    f"{self.embedding_dim}: sum pooling of the last block gives the embedding"
                )
        if self.generator_type == "warp":
            self._check_warp_generator()
        else:
            self._check_generator()

    def _check_warp_generator(self) -> None:
        warp = self.warp_generator
        where = "model.warp_generator"
        _check_down_path(f"{where}.feature_channels", self.image_size, warp.feature_channels)
        if len(warp.decoder_channels) != len(warp.feature_channels) + 1:
            raise UserError(
                f"{where}.decoder_channels needs {len(warp.feature_channels) + 1} entries (the "
                f"bottleneck, then one upsampling block per encoder scale), got "
                f"{len(warp.decoder_channels)}"
            )
        if warp.flow_size < 4 or warp.flow_size % 2 or self.image_size % warp.flow_size:
            raise UserError(
                f"{where}.flow_size {warp.flow_size} must be even and divide image_size "
                f"{self.image_size}"
            )

    def _check_generator(self) -> None:
        gen = self.generator
        _check_down_path("model.generator.encoder_channels", self.image_size, gen.encoder_channels)
        if gen.num_bottleneck_blocks < 0 or any(c < 1 for c in gen.decoder_channels):
            raise UserError("model.generator: block counts and channels must be positive")
        _check_attention(
            "model.generator.encoder_attention_resolutions",
            gen.encoder_attention_resolutions,
            down_sizes(self.image_size, len(gen.encoder_channels)),
        )
        if len(gen.decoder_channels) != len(gen.encoder_channels):
            raise UserError(
                f"model.generator.decoder_channels has {len(gen.decoder_channels)} blocks, "
                f"encoder_channels {len(gen.encoder_channels)}: G must upsample back to "
                f"{self.image_size} px"
            )
        bottleneck_size = self.image_size >> len(gen.encoder_channels)
        _check_attention(
            "model.generator.decoder_attention_resolutions",
            gen.decoder_attention_resolutions,
            [bottleneck_size << (i + 1) for i in range(len(gen.decoder_channels))],
        )


def down_sizes(image_size: int, num_blocks: int) -> list[int]:
    """Output resolution of each block of a downsampling path."""
    return [image_size >> (i + 1) for i in range(num_blocks)]


def _check_down_path(where: str, image_size: int, channels: tuple[int, ...]) -> None:
    """A downsampling path must have blocks and keep whole pixels down to its last one."""
    if not channels or any(c < 1 for c in channels):
        raise UserError(f"{where}: needs at least one entry, all positive")
    if image_size % (1 << len(channels)) != 0:
        raise UserError(
            f"{where}: {len(channels)} downsampling blocks do not divide image_size "
            f"{image_size} into whole pixels"
        )


def _check_attention(where: str, resolutions: tuple[int, ...], block_sizes: list[int]) -> None:
    """Attention goes after a block of that output size; one that matches none is a typo."""
    for res in resolutions:
        if res not in block_sizes:
            raise UserError(f"{where}: no block outputs {res} px (they output {block_sizes})")
