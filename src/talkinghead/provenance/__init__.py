"""Every output marked as synthetic: pixel watermark, container tags, C2PA manifest, verify.

- :class:`OutputMark` marks one output of the pipeline (frames, tags, manifest), on by default;
- :class:`Marker` adds the invisible watermark to each frame as it is written;
- :func:`attach_provenance` labels the finished file (tags + signed C2PA manifest);
- :func:`verify_file` / :func:`main_verify` check a file (``talkinghead verify``).
"""

from talkinghead.provenance.metadata import (
    ProvenanceInfo,
    attach_provenance,
    new_watermark_id,
)
from talkinghead.provenance.outputs import (
    UNMARKED_WARNING,
    MarkingOptions,
    OutputMark,
    synthetic_tags,
    warn_unmarked,
)
from talkinghead.provenance.signing import SigningConfig
from talkinghead.provenance.verify import FileReport, main_verify, verify_file
from talkinghead.provenance.watermark import Detection, Marker, WatermarkConfig, detect_frames

__all__ = [
    "UNMARKED_WARNING",
    "Detection",
    "FileReport",
    "Marker",
    "MarkingOptions",
    "OutputMark",
    "ProvenanceInfo",
    "SigningConfig",
    "WatermarkConfig",
    "attach_provenance",
    "detect_frames",
    "main_verify",
    "new_watermark_id",
    "synthetic_tags",
    "verify_file",
    "warn_unmarked",
]
