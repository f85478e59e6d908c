"""``talkinghead verify FILE...``: is a video or picture marked as made by talkinghead?

Three independent checks per file: the C2PA manifest (and whether its signature checks), the
plain container tags, and the pixel watermark (which survives re-uploads that strip metadata).
A file counts as marked when any of them says synthetic; the exit code is 1 when any file is
marked, 0 when none is; an unreadable file is a UserError (one line, exit code 2 in the CLI).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from talkinghead import video
from talkinghead.errors import UserError
from talkinghead.provenance import metadata, signing
from talkinghead.provenance.watermark import Detection, WatermarkConfig, detect_frames

MAX_FRAMES = 240  # frames read from a long video (evenly spaced); voting saturates well before


@dataclass(frozen=True)
class FileReport:
    path: Path
    kind: str  # video | image
    manifest: signing.ManifestReport | None
    tags: dict | None  # the provenance record from plain tags
    watermark: Detection
    c2pa_checked: bool = True  # False when c2pa-python is not installed

    @property
    def marked(self) -> bool:
        from_manifest = self.manifest is not None and (
            self.manifest.synthetic or bool(self.manifest.record.get("synthetic"))
        )
        from_tags = bool(self.tags and self.tags.get("synthetic"))
        return from_manifest or from_tags or self.watermark.marked

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "marked": self.marked,
            "c2pa": None if self.manifest is None else self.manifest.to_dict(),
            "c2pa_checked": self.c2pa_checked,
            "tags": self.tags,
            "watermark": self.watermark.to_dict(),
        }

    def lines(self) -> list[str]:
        verdict = "MARKED as synthetic" if self.marked else "no synthetic marking found"
        return [
            f"{self.path}: {verdict}",
            f"  C2PA manifest: {self._manifest_line()}",
            f"  container tags: {self._tags_line()}",
            f"  watermark: {self._watermark_line()}",
        ]

    def _manifest_line(self) -> str:
        if not self.c2pa_checked:
            return "not checked (c2pa-python is not installed)"
        m = self.manifest
        if m is None:
            return "none"
        if not m.signature_ok:
            return f"INVALID signature or tampered content ({', '.join(m.failures)})"
        who = "trusted" if m.trusted else "untrusted"
        if m.local_certificate:
            who = "a local, unverified talkinghead certificate"
        claim = "AI-generated (trainedAlgorithmicMedia)" if m.synthetic else "no AI claim"
        return f"signature valid, signer {m.signer} [{who}]; {claim}; {_record_text(m.record)}"

    def _tags_line(self) -> str:
        if not self.tags:
            return "none"
        return _record_text(self.tags) or self.tags.get("statement", "")

    def _watermark_line(self) -> str:
        w = self.watermark
        frames = f"{w.num_frames} frame{'s' if w.num_frames != 1 else ''}"
        if not w.marked:
            return f"not detected (score {w.score:.1f} < {w.threshold:.1f}; {frames})"
        odds = (
            f"false-alarm bound {w.false_alarm:.1e}"
            if w.false_alarm > 0
            else "false-alarm bound < 1e-300"
        )
        return (
            f"DETECTED (score {w.score:.1f} >= {w.threshold:.1f}, {odds}; {frames}, "
            f"scale {w.scale:.2f}, id {w.payload_id} unless cropped)"
        )


def _record_text(record: dict) -> str:
    if "generator" not in record:
        return ""
    parts = [
        f"by {record.get('generator')}",
        f"checkpoint {str(record.get('checkpoint_sha256', '?'))[:12]}",
        f"motion {record.get('motion_mode', '?')}",
        f"created {record.get('created', '?')}",
    ]
    if record.get("watermark_id") is not None:
        parts.append(f"watermark id {record['watermark_id']}")
    return ", ".join(parts)


def media_kind(path: Path) -> str:
    """'image' or 'video'; UserError when the file is neither."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.verify()
        return "image"
    except (UnidentifiedImageError, OSError, SyntaxError):
        pass
    try:
        info = video.probe(path)
    except UserError:
        raise UserError(f"{path}: not a video or image file") from None
    if info.width <= 0:
        raise UserError(f"{path}: not a video or image file")
    return "video"


def _frames(path: Path, kind: str):
    """The frames to check and the rate they are shown at (the pattern turns with time)."""
    if kind == "image":
        return [video.read_image(path)], 30.0
    info = video.probe(path)
    every_nth = max(1, math.ceil(info.num_frames / MAX_FRAMES))
    return video.read_frames(path, every_nth=every_nth), float(info.fps) / every_nth


def verify_file(path: str | Path, config: WatermarkConfig | None = None) -> FileReport:
    """All three checks on one file (also the Python and web entry point)."""
    path = Path(path)
    kind = media_kind(path)
    available = signing.c2pa_available()
    try:
        frames, fps = _frames(path, kind)
        watermark = detect_frames(frames, config, fps)
    except ValueError as exc:  # no frames, or frames of changing size
        raise UserError(f"{path}: {exc}") from None
    return FileReport(
        path=path,
        kind=kind,
        manifest=signing.read_manifest(path) if available else None,
        tags=metadata.read_tags(path),
        watermark=watermark,
        c2pa_checked=available,
    )


def main_verify(paths: list[Path], json_output: bool = False) -> int:
    """Print a report per file; 1 if any file is marked, else 0 (errors raise UserError)."""
    for path in paths:  # fail before printing anything when one file is not media
        media_kind(Path(path))
    reports = [verify_file(p) for p in paths]
    if json_output:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print("\n".join(line for r in reports for line in r.lines()))
    return 1 if any(r.marked for r in reports) else 0
