"""The paper's protocol (Sec. 4.1): personalise on T frames of one part of a video, render
hold-out frames of another part from their own landmarks (self-reenactment), compare with the
real frames; plus cross-identity driving. Every method, baselines included, goes through the
same scoring code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.config.base import to_dict
from talkinghead.data import tracks
from talkinghead.errors import UserError
from talkinghead.evaluation import baselines
from talkinghead.evaluation.scoring import Scorer
from talkinghead.inference.faces import FaceCrop
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.landmarks import motion
from talkinghead.video import read_frames


@dataclass(frozen=True)
class EvalConfig:
    shots: tuple[int, ...] = (1, 8, 32)  # T (paper: 1, 8, 32)
    num_holdout: int = 32  # hold-out frames per video (paper: 32)
    finetune: tuple[bool, ...] = (False, True)  # feed-forward and fine-tuned
    finetune_steps: int | None = None  # None: the default for T (125..230, early stop)
    split: float = 0.5  # shots from the first part of the track, hold-out from the rest


@dataclass
class TestVideo:
    name: str
    crops: list[FaceCrop]  # every frame of the video's longest face track, cropped as prep

    def split(self, num_shots: int, num_holdout: int, split: float):
        cut = max(1, int(len(self.crops) * split))
        first, second = self.crops[:cut], self.crops[cut:]
        if not second:
            raise UserError(f"{self.name}: too short to hold frames out ({len(self.crops)})")
        return _evenly(first, num_shots), _evenly(second, num_holdout)


def _evenly(items: list, count: int) -> list:
    picks = np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)
    return [items[i] for i in picks]


def load_test_video(path: Path, head: TalkingHead) -> TestVideo:
    """Track and crop a test video exactly as ``prep`` does, at the model's size."""
    config = head.preset.prep.__class__(
        **{**to_dict(head.preset.prep), "crop_size": head.image_size}
    )
    found = [t for t in tracks.find_tracks(read_frames(path), config) if len(t) > 1]
    if not found:
        raise UserError(f"{path}: no face track to evaluate on")
    track = tracks.crop_track(max(found, key=len), config)
    crops = [
        FaceCrop(c, lm.astype(np.float64), track.box, 1)
        for c, lm in zip(track.crops, track.landmarks)
    ]
    return TestVideo(path.stem, crops)


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, start: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start


def self_reenactment(
    head: TalkingHead,
    video: TestVideo,
    config: EvalConfig,
    scorer: Scorer,
    timings: Timings,
    progress: bool = False,
    keep: dict | None = None,
) -> list[dict]:
    """Rows of scores, one per (method, T, variant), for one video.

    ``keep``, when given, receives the personalised people by (video, T, fine-tuned).
    """
    rows = []
    for num_shots in config.shots:
        shots, holdout = video.split(num_shots, config.num_holdout, config.split)
        people: dict = {}
        outputs = _self_outputs(head, shots, holdout, config, timings, progress, people)
        if keep is not None:
            keep.update({(video.name, len(shots), k): v for k, v in people.items()})
        real = np.stack([c.image for c in holdout])
        targets = np.stack([c.landmarks for c in holdout])
        for method, generated in outputs.items():
            start = time.perf_counter()
            scores = scorer.self_reenactment(generated, real, targets)
            timings.add("metrics", start)
            rows.append(
                {"video": video.name, "protocol": "self", "method": method, "T": len(shots)}
                | scores
            )
    return rows


def _self_outputs(head, shots, holdout, config, timings, progress, people) -> dict:
    """Each method's frames for the hold-out landmarks: baselines, then the model variants."""
    targets = np.stack([c.landmarks for c in holdout])
    shot_images = np.stack([c.image for c in shots])
    shot_landmarks = np.stack([c.landmarks for c in shots])
    start = time.perf_counter()
    outputs = {
        "nearest shot": baselines.copy_nearest(shot_images, shot_landmarks, targets),
        "warp": baselines.warp_nearest(shot_images, shot_landmarks, targets),
    }
    timings.add("baselines", start)
    for finetuned in config.finetune:
        start = time.perf_counter()
        steps = config.finetune_steps if finetuned else 0
        person = people[finetuned] = head.personalize_crops(shots, None, steps, progress)
        timings.add("fine-tune" if finetuned else "personalise", start)
        start = time.perf_counter()
        name = "model (fine-tuned)" if finetuned else "model (feed-forward)"
        outputs[name] = head.render(person, targets)
        timings.add("render", start)
    return outputs


def cross_identity(
    head: TalkingHead,
    source: TestVideo,
    driver: TestVideo,
    config: EvalConfig,
    scorer: Scorer,
    timings: Timings,
    num_shots: int = 8,
) -> list[dict]:
    """Person ``source`` driven by ``driver`` (relative motion): identity vs motion scores."""
    shots, _ = source.split(num_shots, 1, config.split)
    _, holdout = driver.split(1, config.num_holdout, config.split)
    driver_landmarks = np.stack([c.landmarks for c in holdout])
    start = time.perf_counter()
    person = head.personalize_crops(shots, None, 0, False)
    timings.add("personalise", start)
    targets = motion.retarget_relative(
        person.reference_landmarks, driver_landmarks, driver_landmarks[0]
    )
    shot_images = np.stack([c.image for c in shots])
    shot_landmarks = np.stack([c.landmarks for c in shots])
    outputs = {
        "model (feed-forward)": head.render(person, targets),
        "warp": baselines.warp_nearest(shot_images, shot_landmarks, targets),
    }
    rows = []
    for method, generated in outputs.items():
        start = time.perf_counter()
        scores = scorer.cross_identity(generated, shot_images, shot_landmarks, targets)
        timings.add("metrics", start)
        rows.append(
            {
                "video": f"{source.name} <- {driver.name}",
                "protocol": "cross",
                "method": method,
                "T": len(shots),
                **scores,
            }
        )
    return rows


def evaluate(
    head: TalkingHead,
    videos: Sequence[Path],
    config: EvalConfig,
    scorer: Scorer,
    progress: bool = True,
    keep: dict | None = None,
) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """All rows, and per-video timings (seconds per part); ``keep``: see self_reenactment."""
    from tqdm import tqdm

    loaded, rows, timings = [], [], {}
    for path in tqdm(list(videos), desc="eval", unit="video", disable=not progress):
        timing = Timings()
        start = time.perf_counter()
        video = load_test_video(Path(path), head)
        timing.add("track+crop", start)
        rows += self_reenactment(head, video, config, scorer, timing, keep=keep)
        loaded.append(video)
        timings[video.name] = timing.seconds
    for source in loaded:
        for driver in loaded:
            if source is not driver:
                timing = Timings()
                rows += cross_identity(head, source, driver, config, scorer, timing)
                timings[f"{source.name} <- {driver.name}"] = timing.seconds
    return rows, timings
