"""Generator G(y, psi): landmark image -> photo of the person whose AdaIN parameters are psi."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talkinghead.config.model import GeneratorConfig
from talkinghead.models.blocks import AdainProjection, AdaptiveInstanceNorm, ResidualStack
from talkinghead.models.spectral import sn_conv

IMAGE_CHANNELS = 3


class Generator(AdainProjection, nn.Module):
    """G: image-to-image network (Johnson et al.) whose every AdaIN is driven by psi = P e-hat.

    Encoder: downsampling blocks with instance norm; bottleneck: residual blocks with AdaIN;
    decoder: upsampling blocks with AdaIN; then AdaIN -> ReLU -> conv3x3 -> tanh.

    psi's layout is derived, never typed: each AdaIN layer declares ``num_adain_params``
    (C scales then C shifts), ``adain_sizes`` lists the three consumers in forward order
    (bottleneck, decoder, output norm) and ``psi_dim`` is their sum (13,056 at paper-256).
    P (``projection``) is one spectrally normalised linear layer, as in the lab's code.

    For few-shot fine-tuning, call :meth:`project` once and train the resulting psi as free
    parameters (paper, Sec. 3.4); :meth:`forward` takes psi, not e, for that reason.
    """

    def __init__(self, config: GeneratorConfig, *, image_size: int, embedding_dim: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.embedding_dim = embedding_dim
        bottleneck_channels = config.encoder_channels[-1]
        self.encoder = ResidualStack(
            IMAGE_CHANNELS,
            config.encoder_channels,
            input_size=image_size,
            resample="down",
            norm="instance",
            attention_resolutions=config.encoder_attention_resolutions,
            first_preactivation=False,
        )
        self.bottleneck = ResidualStack(
            bottleneck_channels,
            (bottleneck_channels,) * config.num_bottleneck_blocks,
            input_size=self.encoder.output_size,
            norm="adain",
        )
        self.decoder = ResidualStack(
            bottleneck_channels,
            config.decoder_channels,
            input_size=self.encoder.output_size,
            resample="up",
            norm="adain",
            attention_resolutions=config.decoder_attention_resolutions,
        )
        self.output_norm = AdaptiveInstanceNorm(self.decoder.out_channels)
        self.output_conv = sn_conv(self.decoder.out_channels, IMAGE_CHANNELS)
        self.build_projection(
            embedding_dim,
            (
                self.bottleneck.num_adain_params,
                self.decoder.num_adain_params,
                self.output_norm.num_adain_params,
            ),
        )

    def forward(self, landmark_image: Tensor, psi: Tensor) -> Tensor:
        """Render: ``landmark_image [N,3,H,W]`` in [-1,1], ``psi [N,psi_dim]``.

        Returns the frame ``[N,3,H,W]`` in [-1,1] (tanh), the same convention as the inputs.
        """
        self.check_psi(psi)
        bottleneck_params, decoder_params, output_params = psi.split(self.adain_sizes, dim=1)
        x = self.encoder(landmark_image)
        x = self.bottleneck(x, bottleneck_params)
        x = self.decoder(x, decoder_params)
        x = torch.relu(self.output_norm(x, output_params))
        return torch.tanh(self.output_conv(x))
