"""``talkinghead prep``: videos and photos -> a dataset of face tracks (see :mod:`.store`).

Work is split per source file: a worker decodes one video, finds its face tracks, writes one clip
file per track and finally a record of the source (atomically). A source with a record is done,
so a killed run resumes where it stopped, and a clip appears in the manifest only once its source
is complete. ``shard=(i, n)`` keeps the sources whose path hash is i modulo n, so n machines can
split a corpus with no coordination and their manifests together make the whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkinghead.config.base import to_dict
from talkinghead.config.prep import PrepConfig
from talkinghead.data import store, tracks
from talkinghead.errors import UserError
from talkinghead.fileio import atomic_write_json, atomic_write_text
from talkinghead.landmarks import detect
from talkinghead.video import IMAGE_SUFFIXES, read_frames, read_image

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".avi",
        ".mov",
        ".mkv",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".ts",
    }
)


@dataclass(frozen=True)
class Source:
    path: Path
    name: str  # path relative to its input root: stable across machines
    video: str  # video id (W row): the name without suffix, or its parent folder


@dataclass
class PrepSummary:
    num_sources: int = 0
    num_done_before: int = 0
    num_clips: int = 0
    num_frames: int = 0
    num_skipped: int = 0
    seconds: float = 0.0
    manifest: Path | None = None
    skipped: Path | None = None
    notes: list[str] = field(default_factory=list)


def discover_sources(inputs: Iterable[str | Path], video_id: str = "file") -> list[Source]:
    """Media files named directly or found (recursively, by suffix) in the given folders."""
    sources = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
            )
            sources += [_source(p, p.relative_to(path.parent), video_id) for p in files]
        elif path.exists():
            sources.append(_source(path, Path(path.name), video_id))
        else:
            raise UserError(f"{path}: no such file or folder")
    return sources


def _source(path: Path, relative: Path, video_id: str) -> Source:
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    # Photos of one person in one folder are one "video" (one identity row of W).
    by_parent = video_id == "parent" or is_image
    video = relative.parent.as_posix() if by_parent else relative.with_suffix("").as_posix()
    return Source(path, relative.as_posix(), video if video != "." else path.stem)


def in_shard(source: Source, shard: tuple[int, int]) -> bool:
    return int(store.stable_hash(source.name), 16) % shard[1] == shard[0]


def process_source(source: Source, root: Path, config: PrepConfig) -> dict:
    """Turn one source into clip files and write its record; returns the record."""
    start = time.perf_counter()
    record = {"source": source.name, "video": source.video, "clips": [], "notes": []}
    try:
        if source.path.suffix.lower() in IMAGE_SUFFIXES:
            cropped, num_frames = [_image_track(source, config, record["notes"])], 1
        else:
            cropped, num_frames = _video_tracks(source, config)
    except UserError as exc:
        cropped, num_frames, record["skipped"] = [], 0, str(exc)
    for number, track in enumerate(cropped):
        clip = store.bucketed("clips", f"{source.name}#{number}", ".thc")
        header = {
            "source": source.name,
            "video": source.video,
            "track": number,
            "frame_indices": track.frame_indices.tolist(),
            "box": track.box.tolist(),
        }
        store.write_clip(root / clip, track.crops, track.landmarks, header, config.jpeg_quality)
        record["clips"].append(
            {
                "clip": clip,
                "video": source.video,
                "source": source.name,
                "track": number,
                "num_frames": len(track.crops),
            }
        )
    record["num_frames"] = num_frames
    record["seconds"] = round(time.perf_counter() - start, 3)
    atomic_write_json(root / store.bucketed("records", source.name, ".json"), record)
    return record


def _video_tracks(source: Source, config: PrepConfig) -> tuple[list, int]:
    counter = _Counter(read_frames(source.path, config.every_nth))
    kept, num_tracks = [], 0
    for track in tracks.find_tracks(counter, config):
        num_tracks += 1
        if len(track) >= config.min_track_frames:
            kept.append(tracks.crop_track(track, config))
    if counter.count == 0:
        raise UserError(f"{source.name}: video has zero frames")
    if num_tracks == 0:
        raise UserError(f"{source.name}: no face found in {counter.count} frames")
    if not kept:
        raise UserError(
            f"{source.name}: {num_tracks} face track(s), all shorter than "
            f"min_track_frames={config.min_track_frames}"
        )
    return kept, counter.count


class _Counter:
    """Wraps a frame iterator and counts what it yielded (even if it raises later)."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self.frames, self.count = frames, 0

    def __iter__(self):
        for frame in self.frames:
            self.count += 1
            yield frame


def _image_track(source: Source, config: PrepConfig, notes: list[str]) -> tracks.CroppedTrack:
    image = read_image(source.path)
    faces = detect.detect_faces(image, config.detector, config.upsample)
    if not faces:
        raise UserError(f"{source.name}: no face found in the image")
    if len(faces) > 1:
        notes.append(f"{source.name}: {len(faces)} faces found, using the largest")
    landmarks = detect.predict_landmarks(image, faces[0].box)
    track = tracks.Track([0], [image], [landmarks], confirmed=1)
    return tracks.crop_track(track, config)


def _worker(args: tuple[Source, Path, PrepConfig]) -> dict:
    return process_source(*args)


def run_prep(
    inputs: Iterable[str | Path],
    out: str | Path,
    config: PrepConfig,
    shard: tuple[int, int] = (0, 1),
    num_workers: int = 1,
    video_id: str = "file",
    progress: bool = True,
) -> PrepSummary:
    """Preprocess ``inputs`` into ``out``; resumable, shardable, parallel over sources."""
    root = Path(out)
    _check_dataset_settings(root, config)
    sources = [s for s in discover_sources(inputs, video_id) if in_shard(s, shard)]
    _check_unique(sources)
    summary = PrepSummary(num_sources=len(sources))
    todo = [s for s in sources if not (root / store.bucketed("records", s.name, ".json")).is_file()]
    summary.num_done_before = len(sources) - len(todo)
    start = time.perf_counter()
    bar = tqdm(
        total=len(sources),
        initial=summary.num_done_before,
        unit="video",
        desc=f"prep shard {shard[0]}/{shard[1]}",
        disable=not progress,
    )
    jobs = [(s, root, config) for s in todo]
    frames_done = 0
    with _pool(num_workers) as pool:
        results = pool.imap_unordered(_worker, jobs) if pool else map(_worker, jobs)
        for record in results:
            frames_done += record["num_frames"]
            bar.update()
            bar.set_postfix(frames_per_s=f"{frames_done / (time.perf_counter() - start):.1f}")
    bar.close()
    summary.seconds = time.perf_counter() - start
    _write_outputs(root, sources, shard, summary)
    return summary


def _pool(num_workers: int):
    if num_workers <= 1:
        return contextlib.nullcontext(None)
    # spawn, not forkserver: the workers' parent is then this process, which PDEATHSIG follows.
    return multiprocessing.get_context("spawn").Pool(num_workers, _die_with_parent)


def _die_with_parent() -> None:
    """Workers end when their parent does (Linux): a killed run must not leave orphans that go
    on writing records, or a resumed run would race them."""
    # Not Linux (no prctl): orphans finish their current source and stop.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _check_unique(sources: list[Source]) -> None:
    seen: dict[str, Path] = {}
    for source in sources:
        if source.name in seen:
            raise UserError(
                f"{source.path}: same relative name as {seen[source.name]}; give distinct inputs"
            )
        seen[source.name] = source.path


def _check_dataset_settings(root: Path, config: PrepConfig) -> None:
    """Write dataset.json on first use; refuse to mix outputs of different settings."""
    settings = {"format_version": store.FORMAT_VERSION, "prep": to_dict(config)}
    path = root / "dataset.json"
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != settings:
            changed = sorted(
                k
                for k in settings["prep"]
                if existing.get("prep", {}).get(k) != settings["prep"][k]
            )
            raise UserError(
                f"{path}: made with other prep settings ({', '.join(changed) or 'format'}); "
                "use a new output folder"
            )
        return
    atomic_write_json(path, settings)


def _write_outputs(root: Path, sources: list[Source], shard: tuple[int, int], summary) -> None:
    """Gather the records of this shard into its manifest and skip list (sorted, stable)."""
    clip_lines, skip_lines = [], []
    for source in sorted(sources, key=lambda s: s.name):
        record = json.loads((root / store.bucketed("records", source.name, ".json")).read_text())
        clip_lines += [json.dumps(c, sort_keys=True) for c in record["clips"]]
        summary.num_frames += sum(c["num_frames"] for c in record["clips"])
        summary.notes += record["notes"]
        if "skipped" in record:
            skip_lines.append(json.dumps({"source": source.name, "reason": record["skipped"]}))
    summary.num_clips, summary.num_skipped = len(clip_lines), len(skip_lines)
    summary.manifest = root / "manifests" / store.shard_name(shard)
    summary.skipped = root / "skipped" / store.shard_name(shard)
    atomic_write_text(summary.manifest, "".join(line + "\n" for line in clip_lines))
    atomic_write_text(summary.skipped, "".join(line + "\n" for line in skip_lines))
