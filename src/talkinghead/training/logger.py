"""Run logging: JSON lines (always), TensorBoard (when installed), sample grids as PNG.

Only rank 0 creates a logger; the others get a :class:`NullLogger`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from talkinghead.data.episodes import to_uint8
from talkinghead.provenance import OutputMark


class RunLogger:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.samples_dir = run_dir / "samples"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "log.jsonl", "a", buffering=1)  # noqa: SIM115 (long-lived)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # optional: pip install 'talkinghead[tensorboard]'; log.jsonl always
            self._tensorboard = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, step)

    def samples(
        self, step: int, landmarks: torch.Tensor, target: torch.Tensor, generated: torch.Tensor
    ) -> Path:
        """Save a grid, one row per sample: landmarks | target | generated."""
        grid = sample_grid(landmarks, target, generated)
        path = self.samples_dir / f"step-{step:07d}.png"
        # Generated faces: marked like every output (no model file yet, so the run and step).
        mark = OutputMark.new(f"training run {self.run_dir.name}, step {step}", "training sample")
        mark.save_png(path, grid)
        if self._tensorboard is not None:
            self._tensorboard.add_image("samples", grid, step, dataformats="HWC")
        return path

    def close(self) -> None:
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


class NullLogger:
    """What ranks other than 0 use: logs nothing."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def samples(self, step: int, *tensors: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        pass


def sample_grid(*columns: torch.Tensor, max_rows: int = 4) -> np.ndarray:
    """Tensors [N,3,H,W] in [-1,1], one per column -> uint8 image [rows*H, cols*W, 3]."""
    rows = [
        np.concatenate([to_uint8(c[i]) for c in columns], axis=1)
        for i in range(min(max_rows, len(columns[0])))
    ]
    return np.concatenate(rows, axis=0)
