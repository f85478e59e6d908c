"""A personalised person: what ``animate`` needs, saved as a small safetensors file.

Holds psi (the AdaIN parameters, P e_new or the fine-tuned psi'), the fine-tuned generator
weights when there was fine-tuning (float16), the shots (crops + landmarks, for relative motion
and re-tuning) and the first source photo with its crop box (for paste-back). The metadata names
the model it was made with; loading it for another model is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path

FORMAT = "talkinghead-person"


@dataclass
class Person:
    psi: torch.Tensor  # [psi_dim] float32
    shots: np.ndarray  # [T,S,S,3] uint8 face crops
    shot_landmarks: np.ndarray  # [T,68,2] crop pixels
    photo: np.ndarray  # [H,W,3] uint8, the first source photo (paste-back target)
    photo_box: np.ndarray  # (x0, y0, x1, y1) of the first shot's crop in the photo
    model_hash: str  # sha256 of the model bundle it was made with
    generator_state: dict[str, torch.Tensor] | None = None  # fine-tuned G' weights
    info: dict = field(default_factory=dict)  # steps, shots, losses: for the record

    @property
    def reference_landmarks(self) -> np.ndarray:
        """The landmarks relative motion starts from: the first shot's."""
        return self.shot_landmarks[0]

    def save(self, path: str | Path) -> None:
        tensors = {
            "psi": self.psi.detach().float().contiguous(),
            "shots": torch.from_numpy(np.ascontiguousarray(self.shots)),
            "shot_landmarks": torch.from_numpy(self.shot_landmarks.astype(np.float32)),
            "photo": torch.from_numpy(np.ascontiguousarray(self.photo)),
            "photo_box": torch.from_numpy(self.photo_box.astype(np.float64)),
        }
        for key, value in (self.generator_state or {}).items():
            stored = value.half() if value.is_floating_point() else value
            tensors[f"generator.{key}"] = stored.detach().contiguous().clone()
        metadata = {"format": FORMAT, "model_hash": self.model_hash, "info": json.dumps(self.info)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, model_hash: str | None = None) -> Person:
        """Read a person file; with ``model_hash``, refuse one made with another model."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such person file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: not a readable person file ({exc})") from None
        if metadata.get("format") != FORMAT:
            raise UserError(f"{path}: not a talkinghead person file")
        if model_hash is not None and metadata["model_hash"] != model_hash:
            raise UserError(
                f"{path}: made with another model ({metadata['model_hash'][:12]}, this one is "
                f"{model_hash[:12]}); personalise again with this model"
            )
        generator = {
            k[len("generator.") :]: v.float() if v.is_floating_point() else v
            for k, v in tensors.items()
            if k.startswith("generator.")
        }
        return cls(
            psi=tensors["psi"],
            shots=tensors["shots"].numpy(),
            shot_landmarks=tensors["shot_landmarks"].numpy().astype(np.float64),
            photo=tensors["photo"].numpy(),
            photo_box=tensors["photo_box"].numpy(),
            model_hash=metadata["model_hash"],
            generator_state=generator or None,
            info=json.loads(metadata.get("info", "{}")),
        )
