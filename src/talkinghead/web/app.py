"""The local web demo: a Gradio page over :mod:`talkinghead.inference.jobs`, nothing more.

:class:`DemoRunner` is what the Run button does (check the limits, personalise, animate, name the
result as synthetic) and what the Check button does (``talkinghead verify`` on an upload), and
needs no Gradio; :func:`build_app` lays out the page around it (its Live tab, the browser's webcam
driving the photo, is :mod:`talkinghead.web.live`); :func:`serve` runs it. Gradio is imported only
there, so the CLI works without it.

Safe defaults for a model that makes videos of real people: the server binds to 127.0.0.1, uploads
and driver length are capped, requests wait in a queue and run one at a time (the CPU or GPU is the
bottleneck, and one model object is shared), bad input is shown as its one-line message, and every
result is labelled synthetic on the page and in its file name, and marked as synthetic in the file
(watermark, tags, signed C2PA manifest; the page cannot turn that off). Nothing is fetched from
the internet: analytics are off, no share link, and the default theme's fonts are served locally.

Fine-tuning is on by default ("auto" steps, as ``--finetune-steps``): the person is kept for the
next click with the same photos and settings, and offered as a file to upload next time. The page
is also an API (``/animate``, plain file paths in and out): callable from ``gradio_client``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from talkinghead import assets
from talkinghead.api import finetune_steps_value
from talkinghead.errors import UserError
from talkinghead.inference import jobs
from talkinghead.inference.person import Person
from talkinghead.inference.render import AnimateOptions
from talkinghead.provenance import MarkingOptions, verify_file
from talkinghead.video import probe, read_frames

SYNTHETIC_NOTICE = (
    "**SYNTHETIC VIDEO** - made by talkinghead from the photos and the driving video; "
    "it is not real footage of this person."
)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_FINETUNE_STEPS = 300

# What a progress callback looks like: gr.Progress, or nothing outside the page.
Progress = Callable[..., object]


def _no_progress(*args, **kwargs) -> None:
    return None


@dataclass(frozen=True)
class WebConfig:
    model: Path | None = None  # a model bundle; None = the bundled default
    max_upload_mb: int = 20  # per uploaded file
    max_video_seconds: float = 30.0  # driving video
    max_photos: int = 8
    queue_size: int = 8  # requests waiting beyond the one running; more are turned away
    finetune_steps: str = "auto"  # the page's setting to start with: auto, 0 or N
    device: str = "auto"  # auto|cpu|cuda[:N]|mps (talkinghead.device)
    precision: str = "auto"  # auto|fp32|bf16|fp16


@dataclass(frozen=True)
class Result:
    video: Path
    summary: str  # Markdown, starting with the synthetic notice
    person_file: Path | None = None  # the person, to download and upload next time


class PersonCache:
    """The last few people made, by what made them: a second click with the same photos and
    settings reuses the person instead of fine-tuning again (the slow part of a run)."""

    def __init__(self, size: int = 4):
        self.size, self._people = size, OrderedDict()

    @staticmethod
    def key(photos: Sequence[Path], finetune_steps: int | None, model_hash: str) -> str:
        """sha256 of the photos' bytes (in order), the fine-tuning setting and the model."""
        digest = hashlib.sha256(f"{model_hash} {finetune_steps}".encode())
        for photo in photos:
            digest.update(hashlib.sha256(photo.read_bytes()).digest())
        return digest.hexdigest()

    def get(self, key: str) -> Person | None:
        if key in self._people:
            self._people.move_to_end(key)
        return self._people.get(key)

    def put(self, key: str, person: Person) -> None:
        self._people[key] = person
        while len(self._people) > self.size:
            self._people.popitem(last=False)


class DemoRunner:
    """The model, loaded once, and one run of the CLI's jobs per click of Run."""

    def __init__(self, config: WebConfig, out_dir: Path):
        self.config, self.out_dir = config, out_dir
        self.head = jobs.load_model(config.model, config.device, config.precision)
        self.people = PersonCache()

    def run(
        self,
        photos: Sequence[Path],
        driver: Path | None,
        options: AnimateOptions = AnimateOptions(),
        finetune_steps: int | str | None = "auto",
        progress: Progress = _no_progress,
        person_file: Path | None = None,
    ) -> Result:
        """Personalise on ``photos`` (or load ``person_file``), animate with ``driver``.

        ``finetune_steps``: "auto" (the count for the number of photos), 0 (feed-forward) or
        at most N steps, as ``--finetune-steps``. UserError for bad input.
        """
        start = time.perf_counter()
        steps = self._check(photos, driver, finetune_steps, person_file)
        # The previous results were copied into Gradio's cache when they were shown.
        for old in [*self.out_dir.glob("*.mp4"), *self.out_dir.glob("*.safetensors")]:
            old.unlink()
        self.head.notes.clear()
        progress(0.0, desc="finding the face in the photos")
        person, made_by = self._person(photos, steps, person_file)
        progress(0.0, desc="rendering frames")
        out = self.out_dir / f"synthetic-talkinghead-{uuid.uuid4().hex[:8]}.mp4"
        report = jobs.animate_file(
            self.head, person, driver, out, options, marking=MarkingOptions()
        )
        saved = None
        if person_file is None:
            saved = self.out_dir / f"person-{uuid.uuid4().hex[:8]}.safetensors"
            person.save(saved)
        summary = self._summary(report, made_by, time.perf_counter() - start)
        return Result(out, summary, saved)

    def _person(
        self, photos: Sequence[Path], steps: int | None, person_file: Path | None
    ) -> tuple[Person, str]:
        """The person and how it was made (for the summary): loaded, reused or personalised."""
        if person_file is not None:
            return Person.load(person_file, self.head.model_hash), "person from the uploaded file"
        key = PersonCache.key(photos, steps, self.head.model_hash)
        person = self.people.get(key)
        if person is not None:
            return person, "the same person as an earlier run (same photos and settings)"
        person = jobs.personalize(self.head, list(photos), None, steps=steps)
        self.people.put(key, person)
        done = person.info["finetune_steps"]
        return person, f"fine-tuned {done} steps" if done else "feed-forward"

    def check(self, path: Path | None) -> str:
        """The ``talkinghead verify`` report on one video or picture; UserError for bad files."""
        if path is None:
            raise UserError("give a video or picture to check")
        return "\n".join(verify_file(path).lines())

    def _check(
        self,
        photos: Sequence[Path],
        driver: Path | None,
        finetune_steps: int | str | None,
        person_file: Path | None,
    ) -> int | None:
        """Refuse bad input before any work; returns the fine-tuning steps (None = auto)."""
        steps = finetune_steps_value(finetune_steps)
        if steps is not None and steps > MAX_FINETUNE_STEPS:
            raise UserError(f"at most {MAX_FINETUNE_STEPS} fine-tuning steps here, got {steps}")
        if person_file is None and not 1 <= len(photos) <= self.config.max_photos:
            raise UserError(
                f"give 1 to {self.config.max_photos} photos of the person, or a person file"
            )
        if driver is None:
            raise UserError("give a driving video (or pick the example)")
        seconds = driver_seconds(driver, self.config.max_video_seconds)
        if seconds > self.config.max_video_seconds:
            raise UserError(
                f"{driver.name}: the driving video is longer than the limit of "
                f"{self.config.max_video_seconds:g} s"
            )
        return steps

    def _summary(self, report: jobs.AnimateReport, made_by: str, seconds: float) -> str:
        lines = [
            SYNTHETIC_NOTICE,
            f"{report.frames} frames at {report.fps:.2f} fps, {made_by}, made in {seconds:.1f} s.",
        ]
        if report.times.held_frames:
            lines.append(
                f"Face lost in {report.times.held_frames} driver frame(s): held the last pose."
            )
        return "\n\n".join(lines + report.notes)


def driver_seconds(path: Path, limit: float) -> float:
    """Length of a video in seconds; past ``limit``, any value above it."""
    info = probe(path)
    if info.num_frames:
        return info.num_frames / info.fps
    # Some containers (WebM from a browser's recorder) state no frame count: count them, but stop
    # once past the limit so a long upload costs no more than a short one.
    count, most = 0, int(limit * info.fps) + 1
    for count, _ in enumerate(read_frames(path), start=1):
        if count >= most:
            break
    return count / info.fps


def tidy_message(message: str, uploads: Sequence[Path]) -> str:
    """The message with the server's upload folders cut down to the names the user gave."""
    for path in uploads:
        message = message.replace(str(path), path.name)
    return message


def _file_paths(files) -> list[Path]:
    """A file list's value (paths, or Gradio file objects with a ``.name``) to paths."""
    return [Path(getattr(item, "name", item)) for item in files or []]


INTRO = (
    "# talkinghead\n"
    "Photos of a person + a video of someone talking -> the person in the photos talking "
    "(few-shot neural talking heads, Zakharov et al. 2019). "
    "**Every result is a synthetic video and is labelled as such.**"
)


CHECK_INTRO = (
    "## Check a file\n"
    "Is a video or picture marked as made by talkinghead? This looks for the three marks on "
    "every result: the signed C2PA manifest, the container tags, and the invisible watermark "
    "in the pixels (which survives re-encoding that strips the others). Same as "
    "`talkinghead verify FILE`."
)


def build_app(config: WebConfig, out_dir: Path):
    """The page (a queued ``gr.Blocks``) with the model loaded; results go to ``out_dir``."""
    # Read by Gradio at launch (its version check) as well as per Blocks: no calls home.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr
    except ImportError:
        raise UserError("the web demo needs Gradio: pip install 'talkinghead[web]'") from None

    from talkinghead.web.live import add_live_tab  # here: live.py builds on this module

    runner = DemoRunner(config, out_dir)
    run, check = _click_handler(gr, runner), _check_handler(gr, runner)
    # delete_cache: uploads and shown results older than an hour go, and all of them at exit.
    with gr.Blocks(title="talkinghead", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Make a video", id="video"), gr.Row():
                with gr.Column():
                    inputs = _input_column(gr, config)
                    button = gr.Button("Make the video", variant="primary", elem_id="run")
                with gr.Column():
                    outputs = _output_column(gr)
            with gr.Tab("Live", id="live", elem_id="live-tab"):
                # The photos, person file, motion and fine-tuning setting of the first tab.
                add_live_tab(gr, app, runner, [inputs[0], inputs[1], inputs[3], inputs[4]])
        # The API view documents this endpoint: photos and files as plain file paths, so that
        # gradio_client's handle_file() values pass Gradio's validation. Its queue slot is the
        # Live tab's too: one model, one run at a time.
        button.click(run, inputs, outputs, api_name="animate", concurrency_id="model")
        gr.Markdown(CHECK_INTRO)
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="A video or picture",
                    file_types=["image", "video"],
                    type="filepath",
                    elem_id="check-file",
                )
                check_button = gr.Button("Check the file", elem_id="check")
            report = gr.Textbox(label="Report", lines=4, interactive=False, elem_id="check-report")
        check_button.click(check, [upload], [report])
    app.queue(default_concurrency_limit=1, max_size=config.queue_size)
    return app


def _refuse(gr, exc: UserError, uploads: Sequence[Path]):
    """A one-line error on the page (and in the log) with server paths cut to the names."""
    message = tidy_message(str(exc), uploads)
    print(f"web: refused: {message}", flush=True)
    return gr.Error(message, duration=None, print_exception=False)


def _check_handler(gr, runner: DemoRunner):
    """Check's handler: an uploaded file in, its verify report out (as text)."""

    def check(upload):
        path = Path(upload) if upload else None
        uploads = [path] if path else []
        try:
            return tidy_message(runner.check(path), uploads)
        except UserError as exc:
            raise _refuse(gr, exc, uploads) from None

    return check


def _click_handler(gr, runner: DemoRunner):
    """Run's handler: page values in, (video, summary) out; bad input as a one-line error."""

    def run(
        photos,
        person_file,
        driver,
        mode,
        finetune_steps,
        paste_back,
        side_by_side,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio finds it by this default)
    ):
        photo_paths = _file_paths(photos)
        person_path = Path(person_file) if person_file else None
        driver_path = Path(driver) if driver else None
        uploads = [*photo_paths, *(p for p in (person_path, driver_path) if p)]
        options = AnimateOptions(mode=mode, paste_back=paste_back, side_by_side=side_by_side)
        try:
            result = runner.run(
                photo_paths, driver_path, options, finetune_steps, progress, person_path
            )
        except UserError as exc:
            raise _refuse(gr, exc, uploads) from None
        person_out = str(result.person_file) if result.person_file else None
        return str(result.video), person_out, tidy_message(result.summary, uploads)

    return run


def _input_column(gr, config: WebConfig) -> list:
    """Photos (or a person file), driver, the bundled example and the options, in the
    handler's argument order."""
    photos = gr.File(
        label=f"Photos of the person (1-{config.max_photos})",
        file_count="multiple",
        file_types=["image"],
        type="filepath",
        height=140,
        elem_id="photos",
    )
    preview = gr.Gallery(
        show_label=False, columns=4, height=120, interactive=False, elem_id="photos-preview"
    )
    # A file list for the photos (its API value is plain paths), thumbnails beside it.
    photos.change(lambda files: files, photos, preview, queue=False, api_visibility="private")
    person = gr.File(
        label="... or a person file from an earlier run (instead of the photos)",
        file_types=[".safetensors"],
        type="filepath",
        height=80,
        elem_id="person-upload",
    )
    driver = gr.Video(
        label=f"Driving video (up to {config.max_video_seconds:g} s)",
        sources=["upload"],
        height=220,
        elem_id="driver",
    )
    gr.Examples(
        [[[str(assets.astronaut_path())], str(assets.sample_clip_path())]],
        [photos, driver],
        label="Example: the astronaut photo and the sample clip",
        cache_examples=False,
        elem_id="example",
    )
    with gr.Accordion("Options", open=True):
        mode = gr.Radio(
            ["relative", "absolute"],
            value="relative",
            label="Motion",
            info="relative: the driver's motion on the person's own face shape; "
            "absolute (the paper): the driver's landmarks, face shape included",
        )
        finetune_steps = gr.Dropdown(
            ["auto", "0", "50", "100", "200", str(MAX_FINETUNE_STEPS)],
            value=config.finetune_steps,
            allow_custom_value=True,
            label="Fine-tuning steps",
            info="auto (best): by the number of photos, ~125 for one; 0 = feed-forward, "
            "fastest. The same photos and setting again reuse the person.",
            elem_id="finetune-steps",
        )
        with gr.Row():
            paste_back = gr.Checkbox(label="paste back into the photo")
            side_by_side = gr.Checkbox(label="side by side: driver | landmarks | result")
    return [photos, person, driver, mode, finetune_steps, paste_back, side_by_side]


def _output_column(gr) -> list:
    """The result video, the person file to download, the summary: the handler's outputs."""
    video = gr.Video(
        label="Result: SYNTHETIC video",
        interactive=False,
        autoplay=True,
        loop=True,
        elem_id="result",
    )
    person = gr.File(
        label="Person file: upload it next time to skip the fine-tuning",
        interactive=False,
        elem_id="person-download",
    )
    summary = gr.Markdown("The result appears here, labelled as synthetic.", elem_id="summary")
    return [video, person, summary]


def serve(host: str = "127.0.0.1", port: int = 7860, config: WebConfig = WebConfig()) -> None:
    """Load the model, serve the page on ``host:port`` until Ctrl-C or SIGTERM."""
    if host not in LOCAL_HOSTS:
        print(
            f"web: WARNING: listening on {host}: anyone who can reach this address can upload "
            "photos and make videos with this machine"
        )
    out_dir = Path(tempfile.mkdtemp(prefix="talkinghead-web-"))
    try:
        app = build_app(config, out_dir)
        model = config.model or assets.default_model_path()
        print(f"web: http://{host}:{port} (model {model}; Ctrl-C stops)", flush=True)
        _stop_on_sigterm()
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            show_error=False,  # unexpected errors: a generic message on the page, the log here
            max_file_size=f"{config.max_upload_mb}mb",
            quiet=True,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, a test) stops like Ctrl-C: Gradio closes and files go."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
