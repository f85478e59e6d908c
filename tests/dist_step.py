"""Run under torchrun (or alone): one G step + one D step with SGD(lr=1), dump weight deltas.

With plain SGD at lr 1, the change of every weight is minus its gradient, so comparing deltas
compares gradients exactly (Adam's first step would hide them behind g/|g|).
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import default_collate

from talkinghead.data.episodes import EpisodeDataset
from talkinghead.data.sampling import StepBatchSampler
from talkinghead.training import distributed
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.meta_learning import MetaLearner

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from train_helpers import fast_preset


def main(data_root: str, out: str, batch_size: int) -> None:
    dist = distributed.init_distributed("cpu")
    preset = fast_preset(batch_size=batch_size)
    data = EpisodeDataset(data_root, preset.train.num_shots, preset.model.image_size, 0.0, 0)
    content, _ = build_training_content_loss(preset.loss)
    learner = MetaLearner(preset, data.num_videos, content, dist.device)
    generator_params = [*learner.embedder.parameters(), *learner.generator.parameters()]
    learner.optimiser_g = torch.optim.SGD(generator_params, lr=1.0)
    learner.optimiser_d = torch.optim.SGD(learner.discriminator.parameters(), lr=1.0)
    learner.optimiser_w = torch.optim.SGD(learner.video_embeddings.parameters(), lr=1.0)
    before = {k: v.clone() for k, v in _weights(learner).items()}
    sampler = StepBatchSampler(data.num_videos, batch_size, dist.rank, dist.world_size, 0)
    batch = default_collate([data[key] for key in sampler.batch(0)])
    learner.train()
    result = learner.generator_step(batch)
    learner.discriminator_step(batch, result.generated)
    deltas = {k: v - before[k] for k, v in _weights(learner).items()}
    torch.save(deltas, f"{out}.rank{dist.rank}.pt")
    distributed.cleanup()


def _weights(learner: MetaLearner) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("embedder", "generator", "discriminator", "video_embeddings"):
        for key, value in getattr(learner, name).named_parameters():
            out[f"{name}.{key}"] = value.detach()
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
