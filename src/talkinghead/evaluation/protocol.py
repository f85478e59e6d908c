"""The paper's protocol (Sec. 4.1): personalise on T frames of one part of a video, render
hold-out frames of another part from their own landmarks (self-reenactment), compare with the
real frames; plus cross-identity driving. Every method, baselines included, goes through the
same scoring code.

Temporal measures (jitter, mouth opening) need consecutive frames, which the paper's hold-out
frames (spread evenly over the second part) are not: each video also gives a *run* of
consecutive frames of its second part, the window where the mouth moves most (so that mouth
sync is measured while the person speaks). Self-reenactment renders the run from its own
landmarks (jitter and mouth against the real run); cross-identity drives person A with B's run
(relative motion).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from talkinghead.config.base import to_dict
from talkinghead.data import tracks
from talkinghead.errors import UserError
from talkinghead.evaluation import baselines
from talkinghead.evaluation.bars import FEED_FORWARD, FINE_TUNED, main_shots
from talkinghead.evaluation.scoring import RealFrames, Scorer, find_landmarks
from talkinghead.evaluation.temporal import mouth_opening
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
    num_consecutive: int = 40  # the run: consecutive second-part frames (jitter, cross-person)
    num_pictured: int = 3  # hold-out frames per person in frames.png


@dataclass
class TestVideo:
    name: str
    crops: list[FaceCrop]  # every frame of the video's longest face track, cropped as prep

    def split(self, num_shots: int, num_holdout: int, split: float):
        first, second = self._parts(split)
        return _evenly(first, num_shots), _evenly(second, num_holdout)

    def run(self, num_frames: int, split: float) -> list[FaceCrop]:
        """``num_frames`` consecutive frames of the second part: the window in which the
        tracked mouth opening varies most (the first such window)."""
        _, second = self._parts(split)
        if len(second) <= num_frames:
            return second
        opening = mouth_opening(np.stack([c.landmarks for c in second]))
        spread = [opening[i : i + num_frames].std() for i in range(len(second) - num_frames + 1)]
        start = int(np.argmax(spread))
        return second[start : start + num_frames]

    def _parts(self, split: float) -> tuple[list[FaceCrop], list[FaceCrop]]:
        cut = max(1, int(len(self.crops) * split))
        first, second = self.crops[:cut], self.crops[cut:]
        if not second:
            raise UserError(f"{self.name}: too short to hold frames out ({len(self.crops)})")
        return first, second


class FrameSamples(NamedTuple):
    """A few hold-out frames of one person for the frames picture, all [N,S,S,3] but
    ``landmarks`` [N,68,2]; ``label`` names the model variant and T."""

    landmarks: np.ndarray
    warp: np.ndarray
    ours: np.ndarray
    real: np.ndarray
    label: str


def _evenly(items: list, count: int) -> list:
    picks = np.linspace(0, len(items) - 1, min(count, len(items))).round().astype(int)
    return [items[i] for i in picks]


def _real(crops: Sequence[FaceCrop], found: np.ndarray | None = None) -> RealFrames:
    images = np.stack([c.image for c in crops])
    return RealFrames(images, np.stack([c.landmarks for c in crops]), found)


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
    run: RealFrames,
    config: EvalConfig,
    scorer: Scorer,
    timings: Timings,
    people: dict | None = None,
    samples: dict | None = None,
) -> list[dict]:
    """Rows of scores, one per (method, T, variant), for one video.

    Hold-out frames give SSIM, PSNR, identity and landmark scores; ``run`` (the video's
    consecutive frames, with ``found``) gives jitter and mouth opening. ``people``, when given,
    receives the personalised people by (video, T, fine-tuned); ``samples`` a few hold-out
    frames of each method at the bars' T, by video (see :class:`FrameSamples`).
    """
    rows = []
    for num_shots in config.shots:
        shots, holdout = video.split(num_shots, config.num_holdout, config.split)
        real = _real(holdout)
        # One render per method for both frame sets: hold-out frames first, then the run.
        targets = np.concatenate([real.landmarks, run.landmarks])
        made: dict = {}
        outputs = _self_outputs(head, shots, targets, config, timings, made)
        if people is not None:
            people.update({(video.name, len(shots), k): v for k, v in made.items()})
        start = time.perf_counter()
        for method, frames in outputs.items():
            scores = scorer.self_reenactment(frames[: len(holdout)], real.images, real.landmarks)
            scores |= scorer.temporal(frames[len(holdout) :], run.found)
            where = {"video": video.name, "protocol": "self", "method": method, "T": len(shots)}
            rows.append(where | scores)
        timings.add("metrics", start)
        if samples is not None and num_shots == main_shots(config.shots):
            samples[video.name] = _samples(outputs, real, len(shots), config.num_pictured)
    return rows


def _self_outputs(head, shots, targets, config, timings, people) -> dict:
    """Each method's frames for the target landmarks: baselines, then the model variants."""
    shot_images = np.stack([c.image for c in shots])
    shot_landmarks = np.stack([c.landmarks for c in shots])
    start = time.perf_counter()
    outputs = {
        "nearest shot": baselines.copy_nearest(shot_images, shot_landmarks, targets),
        "warp": baselines.warp_nearest(shot_images, shot_landmarks, targets),
    }
    timings.add("baselines", start)
    for finetuned in config.finetune:
        person = people[finetuned] = _personalise(head, shots, finetuned, config, timings)
        start = time.perf_counter()
        outputs[FINE_TUNED if finetuned else FEED_FORWARD] = head.render(person, targets)
        timings.add("render", start)
    return outputs


def _personalise(head, shots, finetuned: bool, config: EvalConfig, timings: Timings):
    start = time.perf_counter()
    steps = config.finetune_steps if finetuned else 0
    person = head.personalize_crops(shots, None, steps, False)
    timings.add("fine-tune" if finetuned else "personalise", start)
    return person


def _samples(outputs: dict, real: RealFrames, num_shots: int, count: int) -> FrameSamples:
    ours = FINE_TUNED if FINE_TUNED in outputs else FEED_FORWARD
    picks = _evenly(list(range(len(real.images))), count)
    variant = "fine-tuned" if ours == FINE_TUNED else "feed-forward"
    return FrameSamples(
        real.landmarks[picks],
        outputs["warp"][picks],
        outputs[ours][picks],
        real.images[picks],
        f"{variant}, T={num_shots}",
    )


def cross_identity(
    head: TalkingHead,
    source: TestVideo,
    driver_name: str,
    driver: RealFrames,
    config: EvalConfig,
    scorer: Scorer,
    timings: Timings,
    people: dict,
) -> list[dict]:
    """Person ``source`` driven by another person's run ``driver`` (relative motion from the
    run's frame that matches A's mouth, see :func:`matching_reference`), at the bars' T, for
    every model variant and the warp: identity to A and to B, motion, jitter and mouth opening
    against B. The people come from ``people`` (the self-reenactment's, same shots) when there.
    """
    shots, _ = source.split(main_shots(config.shots), 1, config.split)
    own = _real(shots)
    # Relative motion from A's first shot (Person.reference_landmarks, as animate does).
    reference = matching_reference(own.landmarks[0], driver.landmarks)
    targets = motion.retarget_relative(own.landmarks[0], driver.landmarks, reference)
    outputs = {}
    for finetuned in config.finetune:
        key = (source.name, len(shots), finetuned)
        if key not in people:
            people[key] = _personalise(head, shots, finetuned, config, timings)
        start = time.perf_counter()
        outputs[FINE_TUNED if finetuned else FEED_FORWARD] = head.render(people[key], targets)
        timings.add("render", start)
    start = time.perf_counter()
    outputs["warp"] = baselines.warp_nearest(own.images, own.landmarks, targets)
    timings.add("baselines", start)
    rows = []
    start = time.perf_counter()
    for method, generated in outputs.items():
        scores = scorer.cross_identity(generated, targets, own, driver)
        where = {"video": f"{source.name} <- {driver_name}", "protocol": "cross"}
        rows.append(where | {"method": method, "T": len(shots)} | scores)
    timings.add("metrics", start)
    return rows


def matching_reference(source: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """The driver frame [68,2] of ``driver`` [N,68,2] whose mouth opening is closest to the
    ``source`` landmarks' [68,2]: the frame relative motion starts from.

    Starting from the driver's first frame, as ``animate`` does, inverts the mouth when that
    frame's mouth is open and the source's closed: the driver closing its mouth moves the
    source's lips past each other (measured: correlation -0.97 between the target and driver
    mouth openings, two held-out people).
    """
    gap = np.abs(mouth_opening(driver) - mouth_opening(source[None])[0])
    return driver[int(np.argmin(gap))]


def evaluate(
    head: TalkingHead,
    videos: Sequence[Path],
    config: EvalConfig,
    scorer: Scorer,
    progress: bool = True,
    keep: dict | None = None,
    samples: dict | None = None,
) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """All rows, and per-video timings (seconds per part).

    ``keep`` receives the personalised people by (video, T, fine-tuned); ``samples`` the frames
    for the frames picture by video (see :func:`talkinghead.evaluation.report.frames_grid`).
    """
    from tqdm import tqdm

    people = {} if keep is None else keep
    loaded, rows, timings = [], [], {}
    for path in tqdm(list(videos), desc="eval", unit="video", disable=not progress):
        timing = Timings()
        start = time.perf_counter()
        video = load_test_video(Path(path), head)
        if video.name in timings:  # two files with one name: number the later one
            video.name = f"{video.name}#{len(loaded) + 1}"
        run = _real(video.run(config.num_consecutive, config.split))
        timing.add("track+crop", start)
        start = time.perf_counter()
        run = run._replace(found=find_landmarks(run.images))  # the driver's, for its jitter
        timing.add("metrics", start)
        made: dict = {}
        rows += self_reenactment(head, video, run, config, scorer, timing, made, samples)
        # Cross-identity reuses the people at the bars' T; the others are dropped unless kept
        # (each fine-tuned person holds a whole generator).
        main = len(video.split(main_shots(config.shots), 1, config.split)[0])
        people.update({k: v for k, v in made.items() if keep is not None or k[1] == main})
        loaded.append((video, run))
        timings[video.name] = timing.seconds
    for source, _ in loaded:
        for driver, run in loaded:
            if source is not driver:
                timing = Timings()
                rows += cross_identity(
                    head, source, driver.name, run, config, scorer, timing, people
                )
                timings[f"{source.name} <- {driver.name}"] = timing.seconds
    return rows, timings
