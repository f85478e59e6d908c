"""Embedding match L_MCH (paper Sec. 3.2): ties D's per-video column W_i to the embedder's output.

Training with this term gives the fine-tuning (FT) model, whose discriminator can be initialised
from the embedder for a new person; without it (weight 0) one gets the feed-forward (FF) model.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from talkinghead.config.loss import LossConfig
from talkinghead.losses.terms import LossTerms


def embedding_match_loss(video_embedding: Tensor, frame_embeddings: Tensor) -> Tensor:
    """``mean_k |W_i - e_k|_1``, with the L1 norm taken as a per-dimension mean.

    video_embedding: ``[N, D]``, the discriminator's column W_i for each episode's video.
    frame_embeddings: ``[N, K, D]``, the embedder's output e_k for each of the K source frames
    (``[N, D]`` is taken as K = 1). Both sides receive gradients, as in the paper, where L_MCH
    is a function of the embedder's parameters and of W; detach one side to train only the other.
    """
    if frame_embeddings.dim() == video_embedding.dim():
        frame_embeddings = frame_embeddings.unsqueeze(1)
    target = video_embedding.unsqueeze(1).expand_as(frame_embeddings)
    # Averaging over every element equals the mean over k (and the batch) of per-dimension means.
    return F.l1_loss(frame_embeddings, target)


def embedding_match_terms(
    config: LossConfig, video_embedding: Tensor, frame_embeddings: Tensor
) -> LossTerms:
    """Weighted L_MCH as an ``embedding_match`` term; no term at all when its weight is 0 (FF)."""
    if not config.embedding_match:
        return LossTerms({})
    loss = embedding_match_loss(video_embedding, frame_embeddings)
    return LossTerms({"embedding_match": config.embedding_match * loss})
