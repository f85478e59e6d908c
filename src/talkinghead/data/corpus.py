"""An offline stand-in for VoxCeleb2: pseudo-videos of real still faces moved by real motion.

Real multi-identity talking-head video cannot be had offline (see README, "Training data"). This
builder takes real photos of faces and the landmark motion of a real talking clip, retargets the
motion to each face (relative motion: the clip's changes applied to the photo's own landmarks)
and warps the photo piecewise-affinely to follow it. The result, plus the real clip itself, is a
folder of videos that ``talkinghead prep`` treats like any other source.

What it can teach a model: the mapping from landmark images to a face's appearance for several
real identities, the use of the identity embedding, and mouth/eye/head motion as far as a 2-D
warp of one photo shows it. What it cannot: real 3-D head rotation, teeth and mouth interiors
that the photo does not show, lighting changes, or the diversity of thousands of identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkinghead.config.prep import PrepConfig
from talkinghead.data import tracks
from talkinghead.errors import UserError
from talkinghead.fileio import atomic_write_json
from talkinghead.landmarks import detect, geometry, motion, warp
from talkinghead.provenance.outputs import synthetic_tags
from talkinghead.video import VideoWriter, probe, read_frames, read_image

# Labelled as synthetic in the container; no watermark, which would teach the model the pattern.
CORPUS_TAGS = synthetic_tags("training corpus, a real photo moved by piecewise-affine warps")


@dataclass
class CorpusSummary:
    videos: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Portrait:
    """A square crop of a photo around its face, with the face's landmarks in crop pixels."""

    name: str
    image: np.ndarray  # [S,S,3] uint8
    landmarks: np.ndarray  # [68,2]

    def mirrored(self) -> Portrait:
        size = self.image.shape[1]
        flipped = np.ascontiguousarray(self.image[:, ::-1])
        return Portrait(
            f"{self.name}_mirror", flipped, geometry.flip_landmarks(self.landmarks, size)
        )


def load_portrait(path: Path, size: int, margin: float = 1.0) -> Portrait:
    """Crop the largest face of a photo to ``size`` pixels, with its landmarks."""
    image = read_image(path)
    faces = detect.detect_faces(image)
    if not faces:
        raise UserError(f"{path}: no face found")
    landmarks = detect.predict_landmarks(image, faces[0].box)
    box = geometry.square_box(geometry.landmark_box(landmarks), margin)
    crop = tracks.crop_image(image, box, size)
    return Portrait(path.stem, crop, geometry.crop_transform(box, size).apply(landmarks))


def driver_landmarks(path: Path) -> np.ndarray:
    """Smoothed landmarks [T,68,2] of the longest face track of a real video."""
    config = PrepConfig()
    found = list(tracks.find_tracks(read_frames(path), config))
    if not found:
        raise UserError(f"{path}: no face found to take motion from")
    longest = max(found, key=len)
    return geometry.smooth_sequence(np.stack(longest.landmarks), config.smoothing_window)


def animate_portrait(portrait: Portrait, driver: np.ndarray) -> np.ndarray:
    """Frames [T,S,S,3]: the portrait warped to follow the driver's relative motion."""
    # Head translation is removed (a still photo has no body to move with it); pose and
    # expression changes remain.
    centred = driver - driver.mean(axis=1, keepdims=True) + driver[0].mean(axis=0)
    targets = motion.retarget_relative(portrait.landmarks, centred, centred[0])
    return np.stack(
        [warp.piecewise_affine_warp(portrait.image, portrait.landmarks, t) for t in targets]
    )


def build_corpus(
    photos: list[Path],
    driver_clip: Path,
    out: Path,
    size: int = 256,
    mirror: bool = True,
    progress: bool = True,
    held_out: float = 0.5,
) -> CorpusSummary:
    """Write ``out/pseudo/<photo>.mp4`` for each photo (and its mirror image) + ``out/real/``.

    Only the first ``1 - held_out`` of the real clip's frames go into the corpus: the rest is
    kept for evaluation (``talkinghead eval`` on the clip's second part sees unseen frames).
    The pseudo-videos borrow the whole clip's landmark motion, never its pixels.
    """
    summary = CorpusSummary()
    driver = driver_landmarks(driver_clip)
    fps = probe(driver_clip).fps
    portraits = []
    for path in photos:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such photo")
        try:
            portrait = load_portrait(Path(path), size)
        except UserError as exc:
            summary.skipped.append(str(exc))
            continue
        portraits += [portrait, portrait.mirrored()] if mirror else [portrait]
    for number, portrait in enumerate(
        tqdm(portraits, desc="corpus", unit="video", disable=not progress)
    ):
        # Odd identities play the motion backwards, so identities do not all move in lockstep.
        motion_sequence = driver if number % 2 == 0 else driver[::-1]
        target = out / "pseudo" / f"{portrait.name}.mp4"
        with VideoWriter(target, fps, metadata=CORPUS_TAGS) as writer:
            for frame in animate_portrait(portrait, motion_sequence):
                writer.write(frame)
        summary.videos.append(target)
    real = out / "real" / driver_clip.name
    kept = _write_real_part(driver_clip, real, fps, held_out)
    summary.videos.append(real)
    atomic_write_json(
        out / "corpus.json",
        {
            "kind": "offline stand-in for VoxCeleb2: warped still photos + one real clip",
            "driver": driver_clip.name,
            "real_frames_kept": kept,
            "held_out_fraction": held_out,
            "photos": [str(p) for p in photos],
            "videos": [str(v.relative_to(out)) for v in summary.videos],
            "skipped": summary.skipped,
        },
    )
    return summary


def _write_real_part(source: Path, target: Path, fps: float, held_out: float) -> int:
    """Re-encode the first ``1 - held_out`` of a real clip; returns the frame count kept."""
    frames = list(read_frames(source))
    kept = frames[: max(1, round(len(frames) * (1 - held_out)))]
    with VideoWriter(target, fps) as writer:
        for frame in kept:
            writer.write(frame)
    return len(kept)
