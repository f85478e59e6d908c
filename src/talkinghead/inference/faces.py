"""Faces in the person's photos: find them, choose one, crop it as ``prep`` crops a frame.

The detector looks for faces down to ``SMALLEST_FACE`` px (a player in a sports photo, a row of
a group photo), enlarging the photo only when a plain pass finds no face or several. Faces are
numbered left to right from 1 (``--face N``); by default the largest clear one is used.
Everything here runs without torch, so bad photos are reported before any network loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead import video
from talkinghead.config.prep import PrepConfig
from talkinghead.data.tracks import crop_image
from talkinghead.errors import UserError
from talkinghead.landmarks import detect, geometry

SMALLEST_FACE = 32  # px: the smallest face looked for
# HOG scores of faces in real photos run ~0.1-2.7; the weakest detections are often texture
# (a fold of the astronaut's suit in greyscale: 0.02), so the default prefers clear faces.
CLEAR_FACE_SCORE = 0.5
GOOD_FACE = 64  # px: a smaller face is enlarged into the crop and animates blurry
MAX_SHOTS = 32  # personalisation takes 1-32 images


@dataclass(frozen=True)
class FaceCrop:
    """A square face crop of a photo and where it came from (for paste-back)."""

    image: np.ndarray  # [S,S,3] uint8
    landmarks: np.ndarray  # [68,2] float64, crop pixels
    box: np.ndarray  # (x0, y0, x1, y1) square box in the photo
    num_faces: int  # faces found in the photo
    notes: tuple[str, ...] = ()  # for the user: which face of several, a small face


@dataclass(frozen=True)
class LocatedFace:
    """One face chosen in a photo, with its landmarks: a shot before cropping."""

    photo: np.ndarray  # [H,W,3] uint8
    name: str  # the file (and frame) it came from, for messages
    landmarks: np.ndarray  # [68,2] photo pixels
    box: np.ndarray  # (x0, y0, x1, y1) detector box in the photo
    number: int  # 1 = leftmost face
    num_faces: int
    chosen: bool  # picked with ``face``, not by size

    @property
    def side(self) -> int:
        return round(float(self.box[2] - self.box[0]))

    def notes(self) -> list[str]:
        notes = []
        if self.num_faces > 1:
            how = "as asked" if self.chosen else "the largest clear one"
            box = ", ".join(str(round(float(v))) for v in self.box)
            notes.append(
                f"{self.name}: {self.num_faces} faces found; using face {self.number} ({how}; "
                f"numbered left to right), box ({box}), {self.side} px; choose with --face N"
            )
        if self.side < GOOD_FACE:
            notes.append(
                f"{self.name}: the face is small ({self.side} px); faces under {GOOD_FACE} px "
                "animate blurry: a closer photo works better"
            )
        return notes


def find_faces(photo: np.ndarray, config: PrepConfig, every: bool = False) -> list[detect.Face]:
    """Faces of an RGB photo, numbered left to right (by the centres of their boxes).

    A plain pass first; the slower search down to ``SMALLEST_FACE`` px runs when it finds no
    face or several (a group: everyone gets a number), or with ``every`` (``--face N`` and
    ``--list-faces``, so that both number the same faces).
    """
    faces = [] if every else detect.detect_faces(photo, config.detector, config.upsample)
    if len(faces) != 1:
        faces = detect.detect_faces(photo, config.detector, config.upsample, SMALLEST_FACE)
    return sorted(faces, key=lambda f: float(f.box[0] + f.box[2]))


def locate_face(
    photo: np.ndarray, config: PrepConfig, name: str = "image", face: int | None = None
) -> LocatedFace:
    """Face number ``face`` (1 = leftmost) of a photo, or the largest clear one (detector score
    at least ``CLEAR_FACE_SCORE``; the largest of all when none is); UserError when absent."""
    faces = find_faces(photo, config, every=face is not None)
    if not faces:
        raise UserError(f"{name}: no face found (looked for faces down to {SMALLEST_FACE} px)")
    if face is None:
        clear = [i for i, f in enumerate(faces) if f.score >= CLEAR_FACE_SCORE]
        number = 1 + max(clear or range(len(faces)), key=lambda i: _area(faces[i]))
    elif 1 <= face <= len(faces):
        number = face
    else:
        raise UserError(f"{name}: no face {face}: {len(faces)} found (numbered left to right)")
    box = faces[number - 1].box
    landmarks = detect.predict_landmarks(photo, box)
    return LocatedFace(photo, name, landmarks, box, number, len(faces), face is not None)


def _area(face: detect.Face) -> float:
    return float(np.prod(face.box[2:] - face.box[:2]))


def crop_located(located: LocatedFace, size: int, config: PrepConfig) -> FaceCrop:
    """The face's square crop, cut as ``prep`` cuts a one-frame track."""
    box = geometry.square_box(geometry.landmark_box(located.landmarks), config.crop_margin)
    transform = geometry.crop_transform(box, size)
    image = crop_image(located.photo, box, size)
    notes = tuple(located.notes())
    return FaceCrop(image, transform.apply(located.landmarks), box, located.num_faces, notes)


def crop_face(
    photo: np.ndarray,
    size: int,
    config: PrepConfig,
    name: str = "image",
    face: int | None = None,
) -> FaceCrop:
    """Detect a face of an RGB photo (see :func:`locate_face`) and crop it."""
    return crop_located(locate_face(photo, config, name, face), size, config)


def load_shots(
    photos: Sequence[Path] = (),
    video_path: Path | None = None,
    num_frames: int = 8,
    config: PrepConfig | None = None,
    face: int | None = None,
) -> tuple[list[LocatedFace], list[str]]:
    """The person's shots from files, each with its face located, and notes for the user.

    A video among ``photos`` is taken as ``video_path`` is: ``num_frames`` evenly spaced
    frames, streamed (never the whole video in memory); frames without a face are left out.
    ``config``: detection settings (default: ``prep``'s).
    """
    config = config or PrepConfig()
    shots, notes = [], []
    for path in [*photos, *([video_path] if video_path else [])]:
        kind = video.media_kind(path)
        if kind == "image" and path == video_path:
            raise UserError(f"{path}: an image, not a video: give it with --source")
        if kind == "image":
            shots.append(locate_face(video.read_image(path), config, str(path), face))
            notes += shots[-1].notes()
            continue
        found, skipped = _video_shots(path, num_frames, config, face)
        shots += found
        notes += found[0].notes()  # the frames' notes repeat each other: the first speaks
        if skipped:
            notes.append(f"{path}: no face in frame(s) {', '.join(map(str, skipped))}: left out")
        if path != video_path:
            notes.append(f"{path}: a video: took {len(found)} frames as shots")
    if not 1 <= len(shots) <= MAX_SHOTS:
        raise UserError(f"{len(shots)} shots: give 1 to {MAX_SHOTS} (photos, or --num-frames)")
    return shots, notes


def _video_shots(
    path: Path, num_frames: int, config: PrepConfig, face: int | None
) -> tuple[list[LocatedFace], list[int]]:
    """The faces of ``num_frames`` evenly spaced frames, and the frames without one."""
    picked = video.sample_frames(path, num_frames)
    shots, skipped = [], []
    for index, frame in picked:
        try:
            shots.append(locate_face(frame, config, f"{path} frame {index}", face))
        except UserError:
            skipped.append(index)  # looking away, blurred: the other frames serve
    if not shots:
        raise UserError(f"{path}: no face in any of the {len(picked)} frames looked at")
    return shots, skipped


def face_sheet(photo: np.ndarray, faces: Sequence[detect.Face], thumb: int = 96) -> np.ndarray:
    """Thumbnails of ``faces``, labelled with their numbers, 10 to a row: for ``--list-faces``."""
    from PIL import Image, ImageDraw

    label, columns = 16, min(len(faces), 10)
    rows = -(-len(faces) // columns)
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, face in enumerate(faces):
        x, y = i % columns * thumb, i // columns * (thumb + label)
        thumbnail = crop_image(photo, geometry.square_box(face.box, 0.4), thumb)
        sheet.paste(Image.fromarray(thumbnail), (x, y))
        draw.text((x + thumb // 2, y + thumb + 2), str(i + 1), fill="black", anchor="mt")
    return np.asarray(sheet)
