"""Projection discriminator D(x, y, condition) = V(x, y)^T condition + b (paper, Eq. 5)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config.model import DiscriminatorConfig
from talkinghead.models.blocks import ResidualStack, frame_landmark_path


class DiscriminatorOutput(NamedTuple):
    score: Tensor  # realism r, [N] (unbounded; > 0 means "real" under the hinge loss)
    features: list[Tensor]  # output of every layer of V, [N,C,H,W] each, for feature matching
    embedding: Tensor  # v = V(x, y), [N,embedding_dim], >= 0


class Discriminator(nn.Module):
    """D: V has the embedder's layout plus extra residual blocks, then ReLU and sum pooling.

    The caller passes the projection vector ``condition [N,embedding_dim]``: W_i + w0 during
    meta-learning (see :meth:`condition`), w' during fine-tuning. D owns the shared w0 and b;
    the per-video table W (one row per training video, possibly huge) belongs to the trainer.
    """

    def __init__(self, config: DiscriminatorConfig, *, image_size: int, embedding_dim: int) -> None:
        super().__init__()
        if config.channels[-1] != embedding_dim:
            raise ValueError(f"last channel {config.channels[-1]} != embedding_dim {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.blocks = frame_landmark_path(config.channels, image_size, config.attention_resolutions)
        self.extra_blocks = ResidualStack(
            embedding_dim,
            (embedding_dim,) * config.num_extra_blocks,
            input_size=self.blocks.output_size,
        )
        # w0 starts at unit norm so the score depends on V from the first step even if the
        # trainer starts W at zero; b is the scalar bias of Eq. 5.
        self.w0 = nn.Parameter(torch.randn(embedding_dim) / embedding_dim**0.5)
        self.b = nn.Parameter(torch.zeros(()))

    def condition(self, w_rows: Tensor) -> Tensor:
        """W_i + w0 for rows ``w_rows [N,embedding_dim]`` of the trainer's table W."""
        return w_rows + self.w0

    def forward(
        self, frames: Tensor, landmark_images: Tensor, condition: Tensor
    ) -> DiscriminatorOutput:
        """``frames``, ``landmark_images`` ``[N,3,H,W]`` in [-1,1]; ``condition [N,D]``."""
        features = self.blocks.features(torch.cat([frames, landmark_images], dim=1))
        features += self.extra_blocks.features(features[-1])
        embedding = F.relu(features[-1]).sum(dim=(2, 3))
        score = (embedding * condition).sum(dim=1) + self.b
        return DiscriminatorOutput(score=score, features=features, embedding=embedding)
