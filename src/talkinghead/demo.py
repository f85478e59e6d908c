"""``talkinghead demo``: the whole system on real faces with the bundled model, on a CPU.

1. Evaluate on the real sample clip as the paper does: T = 8 shots from its first half (the
   half the bundled model was trained on), 32 hold-out frames of its second half (never seen in
   training), feed-forward and fine-tuned, against the nearest-shot and warp baselines.
2. Re-enact the clip's person (fine-tuned on the 8 shots) from the whole clip's landmarks.
3. Personalise on the astronaut photo and animate it with the clip's motion (relative motion).
4. Write the videos, the side-by-side comparisons and the report; print where they are.

Every video and the report's frames are marked as synthetic (watermark, tags, signed C2PA
manifest) unless ``DemoConfig.marking`` opts out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkinghead import assets, video
from talkinghead.evaluation.protocol import EvalConfig, evaluate, load_test_video
from talkinghead.evaluation.report import format_table, summarise, write_report
from talkinghead.evaluation.scoring import Scorer
from talkinghead.inference import jobs
from talkinghead.inference.render import AnimateOptions
from talkinghead.landmarks.rasterize import draw_landmarks
from talkinghead.provenance import MarkingOptions, OutputMark


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("out/demo")
    model: Path | None = None  # None: the bundled default
    finetune_steps: int | None = 60  # CPU budget; None = the paper-like default (~150 at T=8)
    num_shots: int = 8
    progress: bool = True
    marking: MarkingOptions = MarkingOptions()
    device: str = "auto"  # auto|cpu|cuda[:N]|mps (talkinghead.device)
    precision: str = "auto"  # auto|fp32|bf16|fp16


def run_demo(config: DemoConfig, log=print) -> dict[str, Path]:
    start = time.perf_counter()
    head = jobs.load_model(config.model, config.device, config.precision)
    clip, photo = assets.sample_clip_path(), assets.astronaut_path()
    name = config.model or assets.default_model_path()
    log(f"demo: model {name} ({head.image_size} px); outputs -> {config.out}")

    # 1. The paper's protocol on the real clip, baselines included.
    people: dict = {}
    eval_config = EvalConfig(shots=(config.num_shots,), finetune_steps=config.finetune_steps)
    rows, timings = evaluate(head, [clip], eval_config, Scorer(), config.progress, keep=people)
    test_video = load_test_video(clip, head)
    person = people[(test_video.name, config.num_shots, True)]

    # 2. The clip's person re-rendered from every frame's landmarks: real | generated.
    reenacted = config.out / "clip_person_reenacted.mp4"
    outputs = {"clip person (real | generated)": reenacted}
    landmarks = np.stack([c.landmarks for c in test_video.crops])
    frames = head.render(person, landmarks)
    fps = video.probe(clip).fps
    mark = OutputMark.new(
        head.model_hash, "self-reenactment (real | generated)", config.marking, fps
    )
    with video.VideoWriter(reenacted, fps, metadata=mark.tags()) as w:
        for crop, frame in zip(test_video.crops, frames):
            w.write(mark.frame(np.concatenate([crop.image, frame], axis=1)))
    notes = [jobs.finish_output(mark, reenacted)]

    # 3. The astronaut driven by the clip (relative motion keeps her face shape).
    astronaut = head.personalize(
        [video.read_image(photo)], config.finetune_steps, config.progress, names=[str(photo)]
    )
    for label, options in (
        ("astronaut", AnimateOptions()),
        ("astronaut side-by-side", AnimateOptions(side_by_side=True)),
        ("astronaut pasted back", AnimateOptions(paste_back=True)),
    ):
        target = config.out / f"{label.replace(' ', '_')}.mp4"
        report = jobs.animate_file(
            head, astronaut, clip, target, options, progress=config.progress, marking=config.marking
        )
        outputs[label] = report.out
        notes += report.notes

    _, holdout = test_video.split(config.num_shots, eval_config.num_holdout, eval_config.split)
    grid = _grid(head, person, holdout[:: max(1, len(holdout) // 4)][:4])
    grid_mark = OutputMark.new(head.model_hash, "evaluation grid", config.marking)
    paths = write_report(config.out, rows, timings, str(name), grid, grid_mark)
    log(format_table(summarise(rows)))
    for label, path in {**outputs, **paths}.items():
        log(f"demo: {label} -> {path}")
    for note in dict.fromkeys(notes):  # the same provenance note for every output: once
        log(f"demo: note: {note}")
    log(f"demo: done in {time.perf_counter() - start:.0f} s")
    return {**outputs, **paths}


def _grid(head, person, crops) -> np.ndarray:
    """Rows of landmarks | generated | real for a few hold-out frames."""
    landmarks = np.stack([c.landmarks for c in crops])
    results = head.render(person, landmarks)
    rows = [
        np.concatenate([draw_landmarks(c.landmarks, head.image_size), r, c.image], axis=1)
        for c, r in zip(crops, results)
    ]
    return np.concatenate(rows, axis=0)
