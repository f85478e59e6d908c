"""On-disk layout of a preprocessed dataset, and the clip file format.

Layout (see README, "Dataset layout")::

    <root>/dataset.json                      prep settings + format version (checked on resume)
    <root>/clips/<hh>/<clip-hash>.thc        one file per face track; <hh> = 256 buckets
    <root>/records/<hh>/<source-hash>.json   one per finished source: its clips or skip reason
    <root>/manifests/shard-<i>-of-<n>.jsonl  one line per clip; readers load these only
    <root>/skipped/shard-<i>-of-<n>.jsonl    one line per skipped source, with the reason

A clip file holds a small header (JSON), the landmarks [T,68,2] float32, the frame offsets, then
the frames as concatenated JPEG bytes, so a training sampler reads only the K+1 frames it needs
(a seek per frame) instead of the whole clip, and a million clips are a million files spread over
256 folders rather than hundreds of millions of frame images.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path

FORMAT_VERSION = 1
_MAGIC = b"THCLIP1\n"


def stable_hash(text: str) -> str:
    """A short hex digest that is the same on every machine and run."""
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def bucketed(folder: str, key: str, suffix: str) -> str:
    """Relative path ``folder/<hh>/<hash><suffix>`` for ``key`` (256 buckets)."""
    digest = stable_hash(key)
    return f"{folder}/{digest[:2]}/{digest}{suffix}"


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_clip(path: Path, crops: np.ndarray, landmarks: np.ndarray, header: dict, quality: int):
    """Write frames [T,S,S,3] uint8 and landmarks [T,68,2] as one clip file (atomically)."""
    blobs = [encode_jpeg(frame, quality) for frame in crops]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.uint64)
    header = {**header, "num_frames": len(blobs), "size": int(crops.shape[1])}
    header_bytes = json.dumps(header, sort_keys=True).encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes)
        f.write(np.ascontiguousarray(landmarks, dtype=np.float32).tobytes())
        f.write(offsets.tobytes())
        for blob in blobs:
            f.write(blob)


@dataclass(frozen=True)
class Clip:
    """Random access to one clip file: landmarks in memory, frames decoded on demand."""

    path: Path
    header: dict
    landmarks: np.ndarray  # [T,68,2] float32, crop pixels
    offsets: np.ndarray  # [T+1] byte offsets into the frame data
    data_start: int

    @classmethod
    def open(cls, path: str | Path) -> Clip:
        path = Path(path)
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                raise UserError(f"{path}: not a talkinghead clip file")
            (header_len,) = struct.unpack("<I", f.read(4))
            header = json.loads(f.read(header_len))
            count = header["num_frames"]
            landmarks = np.frombuffer(f.read(count * 68 * 2 * 4), np.float32).reshape(count, 68, 2)
            offsets = np.frombuffer(f.read((count + 1) * 8), np.uint64).astype(np.int64)
            return cls(path, header, landmarks, offsets, f.tell())

    def __len__(self) -> int:
        return len(self.landmarks)

    def frames(self, indices: list[int] | np.ndarray) -> np.ndarray:
        """Decode the frames at ``indices`` -> [len,S,S,3] uint8."""
        out = []
        with open(self.path, "rb") as f:
            for i in indices:
                f.seek(self.data_start + int(self.offsets[i]))
                blob = f.read(int(self.offsets[i + 1] - self.offsets[i]))
                out.append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
        return np.stack(out)


@dataclass(frozen=True)
class ClipEntry:
    """One manifest line: where a clip is and which video (identity for W) it belongs to."""

    clip: str  # path relative to the dataset root
    video: str  # stable video id; all clips of one video share a row of W
    source: str
    track: int
    num_frames: int


def shard_name(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]:05d}-of-{shard[1]:05d}.jsonl"


def load_manifest(root: str | Path) -> list[ClipEntry]:
    """All clips of a dataset (every shard's manifest), sorted by clip path; no folder scan."""
    root = Path(root)
    files = sorted((root / "manifests").glob("shard-*.jsonl"))
    if not files:
        raise UserError(f"{root}: no manifests/ found (is this a `talkinghead prep` output?)")
    entries = []
    for file in files:
        for line in file.read_text().splitlines():
            entries.append(ClipEntry(**json.loads(line)))
    return sorted(entries, key=lambda e: e.clip)


def video_index(entries: list[ClipEntry]) -> dict[str, int]:
    """Row of W for each video id: the videos in sorted order (stable across shards)."""
    return {video: i for i, video in enumerate(sorted({e.video for e in entries}))}
