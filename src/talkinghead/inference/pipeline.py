"""The inference pipeline: one object from a model bundle to personalised, animated frames.

    head = TalkingHead.from_checkpoint("model.safetensors")  # talkinghead export output
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
from talkinghead.device import (
    autocast_dtype,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)
from talkinghead.errors import UserError
from talkinghead.inference.faces import FaceCrop, crop_face
from talkinghead.inference.person import Person
from talkinghead.landmarks import geometry, motion
from talkinghead.landmarks.rasterize import draw_landmarks_batch
from talkinghead.models import (
    WeightsVersion,
    build_generator,
    build_models,
    frozen_copy,
    uses_shots,
)
from talkinghead.models.warp_generator import Shots
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.fine_tuning import FineTuneConfig, finetune

# Warp family: a frame is rendered from at most this many of the person's shots (each costs a
# motion-net pass per frame), chosen to cover the widest range of poses and expressions.
MAX_RENDER_SHOTS = 8


class FrameRenderer:
    """One person's frames from landmarks: ``renderer(landmarks [T,68,2] crop px, batch_size)
    -> [T,S,S,3]`` uint8 (:meth:`TalkingHead.render` with PyTorch)."""

    def __init__(self, generator: torch.nn.Module, psi: torch.Tensor, shots, precision: str):
        self.generator, self.psi, self.shots, self.precision = generator, psi, shots, precision
        self.image_size = generator.image_size

    @torch.no_grad()
    def __call__(self, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        device, size = self.psi.device, self.image_size
        dtype = autocast_dtype(self.precision)
        autocast = torch.autocast(device.type, dtype or torch.float32, dtype is not None)
        out = []
        for start in range(0, len(landmarks), batch_size):
            points = landmarks[start : start + batch_size]
            drawn = draw_landmarks_batch(points, size)
            with autocast:
                drawn = to_tensor(drawn).to(device, memory_format=torch.channels_last)
                psi = self.psi.expand(len(drawn), -1)
                if self.shots is None:
                    images = self.generator(drawn, psi)
                else:
                    targets = torch.from_numpy(np.asarray(points, np.float32)).to(device)
                    images = self.generator(drawn, targets, psi, self.shots).image
            out.append(to_uint8(images))
        return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


class TalkingHead:
    """E, G and D of one bundle, in eval mode, with personalise and animate."""

    def __init__(
        self, preset: Preset, models, model_hash: str, device: str = "cpu", precision: str = "fp32"
    ):
        # device: auto|cpu|cuda[:N]|mps; precision: auto|fp32|bf16|fp16 (talkinghead.device).
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.precision = resolve_precision(precision, self.device)  # fp32, bf16 or fp16
        self.preset, self.model_hash = preset, model_hash
        self.embedder = models.embedder.to(self.device).eval()
        # channels-last convolutions are ~15% faster on CPU (bench/models.py), 2x with bf16.
        self.generator = models.generator.to(self.device, memory_format=torch.channels_last).eval()
        self.discriminator = models.discriminator.to(self.device).eval()
        self.image_size = preset.model.image_size
        self.notes: list[str] = []  # warnings for the caller to show (several faces, ...)
        self._fine_tuned: list[tuple[Person, torch.nn.Module]] = []
        self._shots_cache: tuple | None = None  # (person, generator, its encoded shots)
        # Inference copies of G and of G' (models.frozen_copy): (source, its weights' version,
        # the copy), the most recent first.
        self._frozen: list[tuple[torch.nn.Module, WeightsVersion, torch.nn.Module]] = []
        # Another runtime for the per-frame network (ONNX Runtime: inference/onnx_backend.py).
        self.backend_renderer = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", precision: str = "fp32"
    ) -> TalkingHead:
        """Load an exported bundle (``talkinghead export``); errors name the file.

        ``device`` and ``precision`` are checked before the file is read, so an absent device
        costs no load (``"auto"`` for both picks what is fastest here: talkinghead.device).
        """
        device = resolve_device(device)
        precision = resolve_precision(precision, device)
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

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str = "auto", precision: str = "auto"
    ) -> TalkingHead:
        """A bundle by path, or with none the bundled default model (warp-128-lite, offline)."""
        from talkinghead import assets  # the one place for model lookup

        return cls.from_checkpoint(path or assets.default_model_path(), device, precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> TalkingHead:
        """Move every network (fine-tuned people's included) to ``device``; returns self.

        ``precision``: as in :meth:`from_checkpoint`; None keeps the current one (checked
        against the new device: fp16 needs CUDA).
        """
        self.device = resolve_device(str(device))
        self.precision = resolve_precision(precision or self.precision, self.device)
        # Module.to keeps each tensor's memory format, so G stays channels-last.
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.nn.Module):  # E, G, D and the content loss once built
                setattr(self, name, value.to(self.device))
        self._fine_tuned = [(p, g.to(self.device)) for p, g in self._fine_tuned]
        self._frozen, self._shots_cache = [], None
        return self

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
        finetune_steps: int | str | None = "auto",
        progress: bool = True,
        names: Sequence[str] | None = None,
    ) -> Person:
        """A Person from 1-32 photos (or video frames) of one person.

        ``finetune_steps``: 0 = feed-forward (psi = P e_new); "auto" or None = the default for
        the number of shots (~125 for 1, ~230 for 30+, early stop); n = at most n steps.
        """
        if not 1 <= len(photos) <= 32:
            raise UserError(f"personalise needs 1 to 32 images, got {len(photos)}")
        crops = self.crop(photos, names)
        return self.personalize_crops(crops, np.asarray(photos[0]), finetune_steps, progress)

    def personalize_crops(
        self,
        crops: Sequence[FaceCrop],
        photo: np.ndarray | None = None,
        finetune_steps: int | str | None = "auto",
        progress: bool = True,
    ) -> Person:
        """A Person from face crops already cut (e.g. by ``prep`` or the evaluation)."""
        embedding = self.embed(crops)
        finetune_steps = None if finetune_steps == "auto" else finetune_steps
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
        generator = build_generator(self.preset.model)
        generator.load_state_dict(person.generator_state)
        generator = generator.to(self.device, memory_format=torch.channels_last).eval()
        self._fine_tuned = [(person, generator), *self._fine_tuned[:3]]
        return generator

    def _render_generator(self, person: Person) -> torch.nn.Module:
        """The inference copy (:func:`models.frozen_copy`) of the person's G or G', made once
        and made again only when the source's weights have changed in place."""
        source = self._generator_for(person)
        for index, (cached_source, version, copy) in enumerate(self._frozen):
            if cached_source is source:
                if not version.changed():
                    return copy
                del self._frozen[index]
                break
        copy = frozen_copy(source, self.preset.model)
        copy = copy.to(self.device, memory_format=torch.channels_last)
        self._frozen = [(source, WeightsVersion(source), copy), *self._frozen[:3]]
        return copy

    @torch.no_grad()
    def render(self, person: Person, landmarks: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Frames [T,S,S,3] uint8 of the person with landmarks [T,68,2] (crop pixels)."""
        if self.backend_renderer is not None:
            return self.backend_renderer.render(person, landmarks, batch_size)
        return self._torch_renderer(person)(landmarks, batch_size)

    def frame_renderer(self, person: Person):
        """What renders the person's frames on its own, ``renderer(landmarks [T,68,2],
        batch_size) -> [T,S,S,3]`` uint8 as :meth:`render`: picklable, for worker processes
        (live mode). PyTorch's (the inference copy of G or G', psi, the encoded shots) or the
        backend's (ONNX Runtime: the person's exported network)."""
        if self.backend_renderer is not None:
            return self.backend_renderer.frame_renderer(person)
        return self._torch_renderer(person)

    def _torch_renderer(self, person: Person) -> FrameRenderer:
        generator = self._render_generator(person)
        shots = self._encoded_shots(person, generator) if uses_shots(generator) else None
        return FrameRenderer(generator, person.psi.to(self.device)[None], shots, self.precision)

    def _encoded_shots(self, person: Person, generator: torch.nn.Module) -> Shots:
        """The person's shots encoded by G (warp family), once per person and generator."""
        cached = self._shots_cache
        if cached and cached[0] is person and cached[1] is generator:
            return cached[2]
        picks = spread_shots(person.shot_landmarks, MAX_RENDER_SHOTS)
        frames = to_tensor(person.shots[picks]).to(self.device)
        drawn = to_tensor(draw_landmarks_batch(person.shot_landmarks[picks], self.image_size))
        points = torch.from_numpy(person.shot_landmarks[picks].astype(np.float32))
        shots = generator.encode_shots(
            frames[None], drawn.to(self.device)[None], points.to(self.device)[None]
        )
        self._shots_cache = (person, generator, shots)
        return shots

    def animate(
        self,
        person: Person,
        driver_landmarks: np.ndarray,
        reference: np.ndarray | None = None,
        mode: str = "relative",
        batch_size: int = 8,
    ) -> np.ndarray:
        """The person driven by landmarks [T,68,2] (driver frame pixels) -> [T,S,S,3] uint8.

        Given a video path instead, it is :meth:`animate_video` (an ``Animation`` whose frames
        carry the provenance marks and whose ``save`` writes the marked video).
        """
        if isinstance(driver_landmarks, (str, Path)):
            return self.animate_video(person, driver_landmarks)
        reference = driver_landmarks[0] if reference is None else reference
        targets = self.target_landmarks(person, driver_landmarks, reference, mode)
        return self.render(person, targets, batch_size)

    def animate_video(self, person: Person, driver, fps=None, *, options=None, marking=None):
        """The person driven by a video file or its frames -> frames marked as the CLI's are.

        A shortcut for :func:`talkinghead.api.animate_video` (which opens the file, so that this
        class stays arrays in, arrays out): returns a :class:`talkinghead.api.Animation`, whose
        ``.frames`` are [T,S,S,3] uint8 and whose ``.save(path)`` writes the labelled video.
        ``options``: an ``AnimateOptions``; ``marking``: a ``MarkingOptions`` (on by default).
        """
        from talkinghead import api

        return api.animate_video(self, person, driver, fps, options, marking)


def spread_shots(shot_landmarks: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` shots [T,68,2] spread over poses (farthest-point sampling from
    the first shot, whose landmarks relative motion starts from)."""
    if len(shot_landmarks) <= count:
        return np.arange(len(shot_landmarks))
    centred = shot_landmarks - shot_landmarks.mean(axis=1, keepdims=True)
    shapes = (centred / np.linalg.norm(centred, axis=(1, 2), keepdims=True)).reshape(
        len(shot_landmarks), -1
    )
    picks = [0]
    distance = np.linalg.norm(shapes - shapes[0], axis=1)
    while len(picks) < count:
        picks.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(shapes - shapes[picks[-1]], axis=1))
    return np.array(picks)
