"""Preprocessing config: face detection, tracking and crops (``talkinghead prep``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PrepConfig:
    crop_size: int = 256  # paper: 256x256 frames
    crop_margin: float = 0.8  # box side = landmark-box side * (1 + margin), as FOMM/VoxCeleb crops
    detector: Literal["hog", "mmod"] = "hog"  # dlib HOG (fast) or CNN MMOD (robust, slow)
    upsample: int = -1  # detector upsampling; -1 = automatic (upsample small frames)
    detect_every: int = 5  # run the detector every n-th kept frame; landmarks track in between
    max_missed_detections: int = 2  # failed re-detections in a row before a face counts as lost
    every_nth: int = 1  # keep every n-th frame of the video
    min_track_frames: int = 16  # drop tracks shorter than this (K=8 sources + targets need >= 9)
    max_track_frames: int = 0  # split tracks longer than this into clips (0 = no limit)
    new_track_iou: float = (
        0.5  # a face box overlapping the track box less than this starts a new track
    )
    smoothing_window: int = 5  # temporal smoothing (frames) of landmarks
    jpeg_quality: int = 95
