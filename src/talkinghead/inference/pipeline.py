"""The inference pipeline: one object from a model bundle to personalised, animated frames.

    head = TalkingHead.from_checkpoint("models/default-small-128.safetensors")
    person = head.personalize([photo], finetune_steps=0)        # RGB uint8 arrays in
    frames = head.animate(person, driver_landmarks, reference)  # RGB uint8 arrays out

Arrays in, arrays out: files are opened by the CLI and :mod:`talkinghead.video` only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from talkinghead.checkpoint import load_weights, read_info
from talkinghead.config.base import from_dict
from talkinghead.config.preset import Preset
from talkinghead.data.episodes import to_tensor, to_uint8
from talkinghead.errors import UserError
from talkinghead.inference.faces import FaceCrop, crop_face
from talkinghead.inference.person import Person
from talkinghead.landmarks import geometry, motion
from talkinghead.landmarks.rasterize import draw_landmarks_batch
from talkinghead.models import build_models
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.fine_tuning import FineTuneConfig, finetune


class TalkingHead:
    """E, G and D of one bundle, in eval mode, with personalise and animate."""

    def __init__(
        self, preset: Preset, models, model_hash: str, device: str = "cpu", precision: str = "fp32"
    ):
        if precision not in ("fp32", "bf16"):
            raise UserError(f"unknown precision {precision!r} (fp32 or bf16)")
        self.preset, self.model_hash, self.precision = preset, model_hash, precision
        self.device = torch.device(device)
        self.embedder = models.embedder.to(self.device).eval()
        # channels-last convolutions are ~15% faster on CPU (bench/models.py), 2x with bf16.
        self.generator = models.generator.to(self.device, memory_format=torch.channels_last).eval()
        self.discriminator = models.discriminator.to(self.device).eval()
        self.image_size = preset.model.image_size
        self.notes: list[str] = []  # warnings for the caller to show (several faces, ...)
        self._fine_tuned: list[tuple[Person, torch.nn.Module]] = []

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", precision: str = "fp32"
    ) -> TalkingHead:
        """Load an exported bundle (``talkinghead export``); errors name the file."""
        path = Path(path)
        info = read_info(path)
        if info.config_type != "Preset":
            raise UserError(f"{path}: not a talkinghead model bundle (no preset in its metadata)")
        preset = from_dict(Preset, info.config, where=str(path))
        models = build_models(preset.model)
        load_weights(
            path,
            {
                "embedder": models.embedder,
                "generator": models.generator,
                "discriminator": models.discriminator,
            },
            preset,
        )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(preset, models, digest, device, precision)

    @functools.cached_property
    def content_loss(self) -> torch.nn.Module:
        loss, _ = build_training_content_loss(self.preset.loss)
        return loss.to(self.device)

    def crop(
        self, photos: Sequence[np.ndarray], names: Sequence[str] | None = None
    ) -> list[FaceCrop]:
        """Largest face of each photo, cropped as in training; notes photos with several."""
        names = names or [f"image {i}" for i in range(len(photos))]
        crops = [crop_face(p, self.image_size, self.preset.prep, n) for p, n in zip(photos, names)]
        for crop, name in zip(crops, names):
            if crop.num_faces > 1:
                self.notes.append(f"{name}: {crop.num_faces} faces found, using the largest")
        return crops

    @torch.no_grad()
    def embed(self, crops: Sequence[FaceCrop]) -> torch.Tensor:
        """e_new: the mean embedding of the shots, [embedding_dim]."""
        frames, landmark_images, _ = self._shot_tensors(crops)
        return self.embedder(frames, landmark_images).mean(dim=0)

    def _shot_tensors(self, crops: Sequence[FaceCrop]):
        images = to_tensor(np.stack([c.image for c in crops])).to(self.device)
        points = np.stack([c.landmarks for c in crops])
        drawn = to_tensor(draw_landmarks_batch(points, self.image_size)).to(self.device)
        return images, drawn, torch.from_numpy(points).float().to(self.device)

    def personalize(
        self,
        photos: Sequence[np.ndarray],
        finetune_steps: int | None = 0,
        progress: bool = True,
        names: Sequence[str] | None = None,
    ) -> Person:
        """A Person from 1-32 photos (or video frames) of one person.

        ``finetune_steps``: 0 = feed-forward (psi = P e_new); None = the default for the number
        of shots (~125 for 1, ~230 for 30+, early stop); n = at most n steps.
        """
        if not 1 <= len(photos) <= 32:
            raise UserError(f"personalise needs 1 to 32 images, got {len(photos)}")
        crops = self.crop(photos, names)
        return self.personalize_crops(crops, np.asarray(photos[0]), finetune_steps, progress)

    def personalize_crops(
        self,
        crops: Sequence[FaceCrop],
        photo: np.ndarray | None = None,
        finetune_steps: int | None = 0,
        progress: bool = True,
    ) -> Person:
        """A Person from face crops already cut (e.g. by ``prep`` or the evaluation)."""
        embedding = self.embed(crops)
        info: dict = {"num_shots": len(crops), "finetune_steps": 0}
        generator_state = None
        with torch.no_grad():
            psi = self.generator.project(embedding[None])[0]
        if finetune_steps != 0:
            config = FineTuneConfig(steps=finetune_steps)
            result = finetune(
                self.generator,
                self.discriminator,
                self.content_loss,
                self.preset.loss,
                self._shot_tensors(crops),
                embedding,
                config,
                progress,
            )
            psi, generator_state = result.psi, result.generator.state_dict()
            info |= {
                "finetune_steps": result.steps,
                "content_loss_first": result.content_losses[0],
                "content_loss_last": result.content_losses[-1],
            }
        return Person(
            psi=psi.cpu(),
            shots=np.stack([c.image for c in crops]),
            shot_landmarks=np.stack([c.landmarks for c in crops]),
            photo=crops[0].image if photo is None else photo,
            photo_box=crops[0].box
            if photo is not None
            else np.array([0.0, 0, *crops[0].image.shape[:2]]),
            model_hash=self.model_hash,
            generator_state=generator_state,
            info=info,
        )

    def target_landmarks(
        self, person: Person, driver: np.ndarray, reference: np.ndarray, mode: str = "relative"
    ) -> np.ndarray:
        """Landmarks [T,68,2] to render, in the person's crop pixels.

        relative: the driver's changes from ``reference`` (its first or a neutral frame) applied
        to the person's own landmarks, so the person keeps their face shape. absolute (the
        paper): the driver's landmarks placed in a crop around the reference frame's face, so
        the driver's face shape carries over.
        """
        if mode == "relative":
            return motion.retarget_relative(person.reference_landmarks, driver, reference)
        if mode == "absolute":
            box = geometry.square_box(
                geometry.landmark_box(reference), self.preset.prep.crop_margin
            )
            return geometry.crop_transform(box, self.image_size).apply(driver)
        raise UserError(f"unknown motion mode {mode!r} (relative or absolute)")

    def _generator_for(self, person: Person) -> torch.nn.Module:
        """G, or the person's fine-tuned G' (built once and kept for the next calls)."""
        if person.generator_state is None:
            return self.generator
        for cached_person, generator in self._fine_tuned:
            if cached_person is person:
                return generator
        generator = build_models(self.preset.model).generator
        generator.load_state_dict(person.generator_state)
        generator = generator.to(self.device, memory_format=torch.channels_last).eval()
        self._fine_tuned = [(person, generator), *self._fine_tuned[:3]]
        return generator

    @torch.no_grad()
    def render(self, person: Person, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Frames [T,S,S,3] uint8 of the person with landmarks [T,68,2] (crop pixels)."""
        generator = self._generator_for(person)
        psi = person.psi.to(self.device)[None]
        out = []
        autocast = torch.autocast(self.device.type, torch.bfloat16, self.precision == "bf16")
        for start in range(0, len(landmarks), batch_size):
            drawn = draw_landmarks_batch(landmarks[start : start + batch_size], self.image_size)
            with autocast:
                drawn = to_tensor(drawn).to(self.device, memory_format=torch.channels_last)
                images = generator(drawn, psi.expand(len(drawn), -1))
            out.append(to_uint8(images))
        return (
            np.concatenate(out)
            if out
            else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        )

    def animate(
        self,
        person: Person,
        driver_landmarks: np.ndarray,
        reference: np.ndarray | None = None,
        mode: str = "relative",
        batch_size: int = 8,
    ) -> np.ndarray:
        """The person driven by landmarks [T,68,2] (driver frame pixels) -> [T,S,S,3] uint8."""
        reference = driver_landmarks[0] if reference is None else reference
        targets = self.target_landmarks(person, driver_landmarks, reference, mode)
        return self.render(person, targets, batch_size)
