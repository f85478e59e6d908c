"""Meta-learning episodes (paper, Sec. 3.2): K source frames + one target frame of one video.

A video's frames are pooled over all its clips (for a folder of photos of one person, every
photo is a one-frame clip). Randomness comes from a generator seeded by ``(seed, draw number)``
(see :mod:`.sampling`), so a sample is the same whichever worker or rank draws it, and a resumed
run sees the same episodes as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from talkinghead.data import store
from talkinghead.landmarks.geometry import flip_landmarks
from talkinghead.landmarks.rasterize import draw_landmarks


class Episode(NamedTuple):
    """Tensors in [-1,1]; batched by the default collate into [B,...]."""

    source_frames: torch.Tensor  # [K,3,S,S]  x_i(s_k)
    source_landmarks: torch.Tensor  # [K,3,S,S]  y_i(s_k)
    target_frame: torch.Tensor  # [3,S,S]  x_i(t)
    target_landmarks: torch.Tensor  # [3,S,S]  y_i(t)
    target_points: torch.Tensor  # [68,2] float32, the target's landmarks in pixels (x, y)
    video_index: torch.Tensor  # [] int64, row i of W
    source_points: torch.Tensor  # [K,68,2] float32, the shots' landmarks (the warp family)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [...,H,W,3] -> float [...,3,H,W] in [-1,1]."""
    writable = np.require(images, requirements=["C", "W"])  # copies only read-only arrays
    tensor = torch.from_numpy(writable).float().div_(127.5).sub_(1.0)
    return tensor.movedim(-1, -3)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float [...,3,H,W] in [-1,1] -> uint8 [...,H,W,3]."""
    scaled = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).movedim(-3, -1).cpu().numpy()


class EpisodeDataset(torch.utils.data.Dataset):
    """Episodes from a ``talkinghead prep`` dataset, resized to ``image_size`` if needed."""

    def __init__(
        self,
        root: str | Path,
        num_shots: int = 8,
        image_size: int | None = None,
        flip_probability: float = 0.0,
        seed: int = 0,
    ):
        self.root = Path(root)
        entries = store.load_manifest(self.root)
        self.video_ids = store.video_index(entries)
        self.videos: list[list[store.ClipEntry]] = [[] for _ in self.video_ids]
        for entry in entries:
            self.videos[self.video_ids[entry.video]].append(entry)
        self.num_shots, self.image_size = num_shots, image_size
        self.flip_probability, self.seed, self.epoch = flip_probability, seed, 0
        self._clips: dict[str, store.Clip] = {}

    @property
    def num_videos(self) -> int:
        return len(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _clip(self, entry: store.ClipEntry) -> store.Clip:
        if entry.clip not in self._clips:  # headers are small; cache them per worker
            self._clips[entry.clip] = store.Clip.open(self.root / entry.clip)
        return self._clips[entry.clip]

    def sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """K+1 frames [K+1,S,S,3] uint8 and landmarks [K+1,68,2] of video ``index``.

        Frames are distinct when the video has at least K+1 of them, else drawn with
        replacement (the target is still distinct from the sources when possible).
        """
        entries = self.videos[index]
        counts = np.array([e.num_frames for e in entries])
        total, needed = int(counts.sum()), self.num_shots + 1
        if total >= needed:
            picks = rng.choice(total, size=needed, replace=False)  # the last one is the target
        else:
            target = int(rng.integers(total))
            pool = np.delete(np.arange(total), target) if total > 1 else np.arange(total)
            picks = np.append(rng.choice(pool, size=self.num_shots), target)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        frames, landmarks = [], []
        for pick in picks:
            clip_number = int(np.searchsorted(starts, pick, side="right") - 1)
            clip = self._clip(entries[clip_number])
            offset = int(pick - starts[clip_number])
            frames.append(clip.frames([offset])[0])
            landmarks.append(clip.landmarks[offset].astype(np.float64))
        return np.stack(frames), np.stack(landmarks)

    def __getitem__(self, key: int | tuple[int, int]) -> Episode:
        """``key`` is a video index, or ``(video_index, draw_number)`` from a step sampler."""
        index, draw = key if isinstance(key, tuple) else (key, self.epoch * len(self) + key)
        rng = np.random.default_rng([self.seed, draw])
        frames, landmarks = self.sample(index, rng)
        size = frames.shape[1]
        if self.image_size and self.image_size != size:
            frames = np.stack([_resize(f, self.image_size) for f in frames])
            landmarks = landmarks * (self.image_size / size)
            size = self.image_size
        if rng.random() < self.flip_probability:
            # Flip image and landmarks together: a mirrored left eye is drawn as a right eye.
            frames = np.ascontiguousarray(frames[:, :, ::-1])
            landmarks = flip_landmarks(landmarks, size)
        images = to_tensor(frames)
        drawn = to_tensor(np.stack([draw_landmarks(points, size) for points in landmarks]))
        points = torch.from_numpy(landmarks.astype(np.float32))
        return Episode(
            images[:-1],
            drawn[:-1],
            images[-1],
            drawn[-1],
            points[-1],
            torch.tensor(index),
            points[:-1],
        )


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
