"""The page's Live tab: the browser's webcam drives the chosen photo, frame by frame.

:class:`LiveRunner` is what each streamed webcam frame does (find or make the person for this
browser session, run :class:`talkinghead.live.LiveSession` on the frame, write the marked frame
where the page can show it, measure the frame rate) and needs no Gradio; :func:`add_live_tab`
lays the tab out around it.

Frames are dropped, never queued, when the server falls behind: Gradio's streaming webcam sends
the next frame only once the previous answer is back, and the server keeps only a stream's latest
frame (a new one replaces one still waiting). The stream shares the page's one queue slot with
"Make the video" (one model, one run at a time) and ends after :data:`TIME_LIMIT` seconds, so one
visitor cannot hold the model for ever. Every frame is watermarked and carries a visible
"SYNTHETIC" label in its pixels (drawn by ``LiveSession``); the page has no control to remove them.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from talkinghead.api import finetune_steps_value
from talkinghead.errors import UserError
from talkinghead.fileio import atomic_path
from talkinghead.inference import jobs
from talkinghead.inference.person import Person
from talkinghead.live.session import LiveSession, RecentRate
from talkinghead.provenance import synthetic_tags
from talkinghead.web.app import DemoRunner, PersonCache, _file_paths, _refuse

LIVE_NOTICE = (
    "**SYNTHETIC LIVE VIDEO** - your webcam's face motion drives the person in the photo. "
    "Every frame is made by talkinghead, watermarked and labelled SYNTHETIC; it is not the "
    "person. The camera picture stays in this browser except for the frames sent to this server."
)
STREAM_EVERY = 1 / 25  # s between webcam frames at most; the page waits for each answer anyway
TIME_LIMIT = 60  # s per stream: the model is shared, so a stream ends and others get a turn
MAX_SESSIONS = 4  # browser sessions kept (LRU); more evict the oldest
KEEP_FRAMES = 16  # output frame files kept per session (the page shows the newest)
RATE_WINDOW = 2.0  # s of frames the shown frame rate and latency are measured over
NEW_STREAM_GAP = 5.0  # s without frames after which the next frame starts a new session


@dataclass
class LiveUpdate:
    """What the page shows after one webcam frame."""

    image: np.ndarray  # RGB uint8, watermarked, "SYNTHETIC" label burnt in
    path: Path | None  # the same frame as a PNG file (None without a frames folder)
    status: str  # Markdown: frame rate, latency, the person, and why a frame is held
    face_found: bool


class FrameFiles:
    """The newest output frames of one session as PNG files the page can serve. Older ones are
    deleted (Gradio would otherwise keep one file per frame for an hour)."""

    def __init__(self, folder: Path, keep: int = KEEP_FRAMES):
        self.folder, self.keep = folder, keep
        self.paths: deque[Path] = deque()
        self.count = 0

    def write(self, image: np.ndarray) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = self.folder / f"synthetic-live-{self.count:07d}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", synthetic_tags("a live frame")["comment"])
        with atomic_path(path, suffix=".png") as tmp:
            # compress_level 1: ~3x faster than the default for a few % more bytes.
            Image.fromarray(image).save(tmp, format="PNG", pnginfo=info, compress_level=1)
        self.paths.append(path)
        while len(self.paths) > self.keep:
            self.paths.popleft().unlink(missing_ok=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _rate_text(rate: RecentRate) -> str:
    latency, fps = 1e3 * rate.latency(), rate.rate()
    if fps is None:
        return f"starting, {latency:.0f} ms a frame"
    return f"{fps:.1f} frames/s, {latency:.0f} ms from frame to result (median)"


@dataclass
class _Session:
    key: tuple  # what made the session: the person's inputs and the motion mode
    live: LiveSession
    made_by: str
    files: FrameFiles | None
    rate: RecentRate = field(default_factory=lambda: RecentRate(RATE_WINDOW))
    last_step: float = 0.0  # time.perf_counter() of its last frame


class LiveRunner:
    """One :class:`LiveSession` per browser session, made with the chosen person on its first
    frame, sharing the page's model and person cache. ``frames_dir``: where each session's
    output frames are written as files (None: not written)."""

    def __init__(
        self, runner: DemoRunner, frames_dir: Path | None = None, max_sessions: int = MAX_SESSIONS
    ):
        self.runner, self.frames_dir, self.max_sessions = runner, frames_dir, max_sessions
        self.sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()  # the page's unload event may come in during a step

    def step(
        self,
        session_id: str,
        frame: np.ndarray,
        photos: Sequence[Path] = (),
        person_file: Path | None = None,
        mode: str = "relative",
        finetune_steps: int | str | None = "auto",
    ) -> LiveUpdate:
        """One webcam frame (RGB uint8 [H,W,3]) of ``session_id`` -> the marked output frame.
        A new person or mode starts a new session. UserError for bad input (no photo, no face
        in the photo); no face in the *camera* frame is not an error: the status says it."""
        captured_at = time.perf_counter()
        session = self._session(session_id, tuple(photos), person_file, mode, finetune_steps)
        shown = session.live.step(frame, captured_at)
        path = session.files.write(shown.image) if session.files else None
        session.last_step = time.perf_counter()
        session.rate.add(session.last_step, shown.latency_s)
        status = f"**Live:** {_rate_text(session.rate)}. Person: {session.made_by}."
        if shown.message:
            status += f"\n\n**{shown.message[0].upper()}{shown.message[1:]}.**"
        return LiveUpdate(shown.image, path, status, shown.face_found)

    def stop(self, session_id: str) -> None:
        """Forget a browser session (its page was closed) and delete its frame files."""
        with self._lock:
            session = self.sessions.pop(session_id, None)
        if session is not None and session.files is not None:
            session.files.close()

    def _session(
        self,
        session_id: str,
        photos: tuple[Path, ...],
        person_file: Path | None,
        mode: str,
        finetune_steps: int | str | None,
    ) -> _Session:
        """The session for these inputs: kept, or made again when the inputs changed (upload
        paths are unique per upload, so the paths stand for the photos) or when a new stream
        starts (a new reference pose, and a person fine-tuned since is picked up)."""
        key = (photos, person_file, mode, str(finetune_steps))
        with self._lock:
            session = self.sessions.get(session_id)
            if session is not None:
                self.sessions.move_to_end(session_id)
        gap = time.perf_counter() - session.last_step if session else 0.0
        if session is not None and session.key == key and gap < NEW_STREAM_GAP:
            return session
        person, made_by = self._person(photos, person_file, finetune_steps)
        files = session.files if session else None
        if files is None and self.frames_dir is not None:
            # The session id comes from the browser: hashed, it cannot name another folder.
            name = hashlib.sha256(session_id.encode()).hexdigest()[:16]
            files = FrameFiles(self.frames_dir / name)
        session = _Session(key, LiveSession(self.runner.head, person, mode=mode), made_by, files)
        with self._lock:
            self.sessions[session_id] = session
            evicted = []
            while len(self.sessions) > self.max_sessions:
                evicted.append(self.sessions.popitem(last=False)[1])
        for old in evicted:
            if old.files is not None:
                old.files.close()
        return session

    def _person(
        self, photos: tuple[Path, ...], person_file: Path | None, finetune_steps: int | str | None
    ) -> tuple[Person, str]:
        """The uploaded person; else the fine-tuned person of an earlier run with these photos
        and settings; else a feed-forward person (a start in seconds, not minutes)."""
        head, people = self.runner.head, self.runner.people
        if person_file is not None:
            return Person.load(person_file, head.model_hash), "from the uploaded person file"
        most = self.runner.config.max_photos
        if not 1 <= len(photos) <= most:
            raise UserError(f"give 1 to {most} photos of the person, or a person file")
        names = ", ".join(p.name for p in photos)
        steps = finetune_steps_value(finetune_steps)
        if steps != 0:
            tuned = people.get(PersonCache.key(photos, steps, head.model_hash))
            if tuned is not None:
                return tuned, f"fine-tuned in an earlier run on {names}"
        key = PersonCache.key(photos, 0, head.model_hash)
        person = people.get(key)
        if person is None:
            person = jobs.personalize(head, list(photos), None, steps=0, progress=False)
            people.put(key, person)
        return person, f"feed-forward from {names}"


def add_live_tab(gr, app, runner: DemoRunner, page_inputs: Sequence) -> LiveRunner:
    """The Live tab's contents and events, inside the caller's ``gr.Tab``. ``page_inputs``:
    the page's photos, person file and motion mode (used when the tab's own photo is empty)
    and its fine-tuning setting (to reuse a person fine-tuned earlier)."""
    from gradio.utils import get_upload_folder

    # Frames are written inside Gradio's upload folder, which it serves without copying; the
    # folder goes when the server exits.
    folder = Path(get_upload_folder()) / f"talkinghead-live-{uuid.uuid4().hex[:8]}"
    live = LiveRunner(runner, folder)
    weakref.finalize(live, shutil.rmtree, folder, True)
    gr.Markdown(LIVE_NOTICE, elem_id="live-notice")
    with gr.Row():
        with gr.Column():
            photo = gr.Image(
                label="Photo of the person (empty: the photos or person file of the first tab)",
                sources=["upload"],
                type="filepath",
                height=160,
                elem_id="live-photo",
            )
            camera = gr.Image(
                label="Your webcam: press Record to start",
                sources=["webcam"],
                streaming=True,
                type="numpy",
                elem_id="live-camera",
            )
        with gr.Column():
            result = gr.Image(
                label="Live result: SYNTHETIC",
                format="png",  # lossless: the watermark and the label stay as drawn
                interactive=False,
                elem_id="live-result",
            )
            status = gr.Markdown("Press Record under the webcam to start.", elem_id="live-status")
    gr.Markdown(
        f"One live stream at a time shares the model with the first tab; a stream stops after "
        f"{TIME_LIMIT} s (press Record again). Frames the server cannot keep up with are "
        "dropped, not queued, so the result stays current."
    )
    camera.stream(
        _stream_handler(gr, live),
        [camera, photo, *page_inputs],
        [result, status],
        stream_every=STREAM_EVERY,
        time_limit=TIME_LIMIT,
        concurrency_id="model",  # the Run button's queue: one model, one run at a time
        show_progress="hidden",
        api_visibility="private",
    )
    app.unload(_unload_handler(gr, live))
    return live


def _stream_handler(gr, live: LiveRunner):
    """The stream's handler: a webcam frame and the person's inputs in, (frame file, status)
    out; bad input ends the stream with a one-line message."""

    def stream(frame, photo, photos, person_file, mode, finetune_steps, request: gr.Request):
        if frame is None:
            return gr.skip(), gr.skip()
        photo_paths = [Path(photo)] if photo else _file_paths(photos)
        person_path = Path(person_file) if person_file and not photo else None
        uploads = [*photo_paths, *([person_path] if person_path else [])]
        try:
            update = live.step(
                request.session_hash, frame, photo_paths, person_path, mode, finetune_steps
            )
        except UserError as exc:
            raise _refuse(gr, exc, uploads) from None
        return str(update.path), update.status

    _wants_request(gr, stream)
    return stream


def _unload_handler(gr, live: LiveRunner):
    def unload(request: gr.Request):
        live.stop(request.session_hash)

    _wants_request(gr, unload)
    return unload


def _wants_request(gr, handler) -> None:
    """Gradio passes the request to a parameter annotated ``gr.Request``; this module's
    annotations are strings (``from __future__``) that it cannot resolve, so set the real one."""
    handler.__annotations__["request"] = gr.Request
