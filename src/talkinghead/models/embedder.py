"""Embedder E(x, y) -> e-hat: the identity vector of a person from frames and their landmarks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config.model import EmbedderConfig
from talkinghead.models.blocks import frame_landmark_path


class Embedder(nn.Module):
    """E: frame and landmark image (6 channels) -> downsampling residual blocks -> ReLU -> sum.

    Paper, Sec. 3.2: no normalisation, global *sum* pooling (not mean), so e's scale grows with
    the final resolution. Inputs are ``[N,3,H,W]`` in [-1,1]: an RGB frame and its landmark
    image (coloured polylines on black, black being -1). Output ``[N,embedding_dim]``, >= 0.
    """

    def __init__(self, config: EmbedderConfig, *, image_size: int, embedding_dim: int) -> None:
        super().__init__()
        if config.channels[-1] != embedding_dim:
            raise ValueError(f"last channel {config.channels[-1]} != embedding_dim {embedding_dim}")
        self.image_size = image_size
        self.embedding_dim = embedding_dim
        self.blocks = frame_landmark_path(config.channels, image_size, config.attention_resolutions)

    def forward(self, frames: Tensor, landmark_images: Tensor) -> Tensor:
        """``[N,3,H,W]``, ``[N,3,H,W]`` in [-1,1] -> per-frame embedding ``[N,embedding_dim]``."""
        features = self.blocks(torch.cat([frames, landmark_images], dim=1))
        return F.relu(features).sum(dim=(2, 3))

    def embed_shots(self, frames: Tensor, landmark_images: Tensor) -> Tensor:
        """Embed K shots per video in one batch: ``[N,K,3,H,W]`` x2 -> ``[N,K,embedding_dim]``.

        The per-shot embeddings are what the embedding-matching loss L_MCH compares with W_i.
        """
        n, k = frames.shape[:2]
        flat = self(frames.flatten(0, 1), landmark_images.flatten(0, 1))
        return flat.view(n, k, -1)

    def embed_video(self, frames: Tensor, landmark_images: Tensor) -> Tensor:
        """e-hat_i: the mean over K shots (paper, Eq. 1). ``[N,K,3,H,W]`` x2 -> ``[N,D]``."""
        return self.embed_shots(frames, landmark_images).mean(dim=1)
