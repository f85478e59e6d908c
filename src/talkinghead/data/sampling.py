"""Step-indexed episode sampling: resumable at any step and split across ranks.

The stream of draws is a chain of seeded permutations of the videos. Optimiser step ``s`` uses
draws ``[s*B*R, (s+1)*B*R)`` of the stream (B episodes per rank, R ranks); rank r takes the r-th
contiguous block of B. So a run resumed at step s sees exactly the episodes an uninterrupted run
sees, and R ranks together see the same global batch as one process with batch B*R.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class StepBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Yields, per step, this rank's list of ``(video_index, draw_number)`` keys, forever."""

    def __init__(
        self,
        num_videos: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ):
        if num_videos < 1:
            raise ValueError("the dataset has no videos")
        self.num_videos, self.batch_size = num_videos, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_step = start_step
        self._cache: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.num_videos, generator=generator))
        return self._cache[1]

    def draw(self, number: int) -> tuple[int, int]:
        """The video of the ``number``-th draw of the stream, with the draw number."""
        epoch, position = divmod(number, self.num_videos)
        return int(self._permutation(epoch)[position]), number

    def batch(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world_size + self.rank) * self.batch_size
        return [self.draw(first + i) for i in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1
