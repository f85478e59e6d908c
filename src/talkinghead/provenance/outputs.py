"""Marking what the pipeline writes: one :class:`OutputMark` per output file.

Usage, for a video::

    mark = OutputMark.new(head.model_hash, "relative", options)
    with VideoWriter(path, fps, metadata=mark.tags()) as writer:
        for frame in frames:
            writer.write(mark.frame(frame))
    note = mark.finish(path)   # tags + signed C2PA manifest; returns a line for the log

and for a picture, :meth:`OutputMark.save_png`. With ``MarkingOptions(enabled=False)`` frames
pass through untouched, :meth:`finish` writes nothing and returns the warning instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead import __version__
from talkinghead.fileio import atomic_path
from talkinghead.provenance.metadata import ProvenanceInfo, attach_provenance, new_watermark_id
from talkinghead.provenance.signing import SigningConfig
from talkinghead.provenance.watermark import Marker, WatermarkConfig

UNMARKED_WARNING = (
    "warning: provenance marking is OFF: this output carries no watermark and no label saying "
    "it is synthetic, and may pass for real footage. Do not share it as if it were real."
)


@dataclass(frozen=True)
class MarkingOptions:
    """How outputs are marked. On by default; ``enabled=False`` is the explicit opt-out."""

    enabled: bool = True
    signing: SigningConfig | None = None  # None: the user's certificate from the environment,
    # else a local, unverified one (see :mod:`talkinghead.provenance.signing`)
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)


@dataclass
class OutputMark:
    """The watermark and the record of one output file."""

    info: ProvenanceInfo
    options: MarkingOptions
    marker: Marker

    @classmethod
    def new(
        cls,
        checkpoint_sha256: str,
        motion_mode: str,
        options: MarkingOptions | None = None,
        fps: float = 30.0,
    ) -> OutputMark:
        """``fps``: the frame rate of the video it marks (the pattern turns with time)."""
        options = options or MarkingOptions()
        config = options.watermark
        payload_id = new_watermark_id(config.num_ids) if options.enabled else None
        info = ProvenanceInfo.new(checkpoint_sha256, motion_mode, payload_id)
        marker = Marker(payload_id or 0, options.enabled, config, fps)
        return cls(info, options, marker)

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def frame(self, frame: np.ndarray, index: int | None = None) -> np.ndarray:
        """Frame ``index`` (default: the next) with the invisible watermark (unchanged when
        marking is off)."""
        return self.marker.mark_frame(frame, index)

    def tags(self) -> dict[str, str]:
        """Container tags to give the video writer up front (then :meth:`finish` need not
        remux the file to add them)."""
        if not self.enabled:
            return {}
        return {"comment": self.info.statement(), "description": self.info.to_json()}

    def finish(self, path: str | Path) -> str:
        """Label the finished file (tags + signed C2PA manifest); a one-line note for the log."""
        if not self.enabled:
            return UNMARKED_WARNING
        return attach_provenance(path, self.info, self.options.signing)

    def save_png(self, path: str | Path, image: np.ndarray, index: int = 0) -> str:
        """Write ``image`` (frame ``index`` of the video, if any) as a marked, labelled PNG
        (atomically); a one-line note."""
        from PIL import Image

        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(self.frame(image, index)).save(tmp, format="PNG")
            return self.finish(tmp)


def synthetic_tags(what: str) -> dict[str, str]:
    """Container tags alone (no watermark, no manifest) for synthetic data that is not a model's
    output, such as the training corpus's warped photos: pixels of training data stay clean."""
    return {"comment": f"SYNTHETIC: {what}, made by talkinghead {__version__}; not real footage"}


def warn_unmarked(stream=None) -> None:
    """Print the warning for an explicit opt-out (stderr)."""
    print(UNMARKED_WARNING, file=stream or sys.stderr)
