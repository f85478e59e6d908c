"""``talkinghead live``: a camera (or a video played as one) drives a person, shown in a
preview window, sent to a virtual camera and/or recorded, with the frame rate and latency live.

The render loop takes the newest captured frame each time round (older ones are dropped, see
:mod:`talkinghead.live.capture`), so a slow machine shows fewer frames, never later ones.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import UserError
from talkinghead.inference.workers import RenderPool, start_pool
from talkinghead.live.capture import FrameSource
from talkinghead.live.outputs import Recording, VirtualCamera, open_preview
from talkinghead.live.session import LiveSession, RecentRate

STATUS_EVERY = 0.5  # seconds between status updates on the terminal
RECENT_SECONDS = 2.0  # the live figures cover this much of the past


@dataclass
class LiveStats:
    """Frame rate and capture-to-output latency, live (the last seconds) and for the run."""

    start: float = field(default_factory=time.perf_counter)
    latencies: list[float] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)  # capture -> taken by the loop
    times: list[float] = field(default_factory=list)  # when each output was ready
    held: int = 0  # outputs without a face (the last good frame held)
    recent: RecentRate = field(default_factory=lambda: RecentRate(RECENT_SECONDS))

    def add(self, latency: float, face_found: bool, age: float = 0.0) -> None:
        now = time.perf_counter()
        self.latencies.append(latency)
        self.ages.append(age)
        self.times.append(now)
        self.held += not face_found
        self.recent.add(now, latency)

    def status(self, source: FrameSource) -> str:
        """One line: frames/s and median latency over the last seconds, dropped so far."""
        rate = self.recent.rate()
        if rate is None:
            return "starting"
        latency = self.recent.latency()
        return f"{rate:.1f} frames/s, latency {1e3 * latency:.0f} ms, {dropped_percent(source)}"

    def summary(self) -> dict:
        """Run totals: frames, frames/s, latency median and 95th percentile (ms)."""
        count = len(self.times)
        seconds = (self.times[-1] - self.times[0]) if count > 1 else 0.0
        latency = np.array(self.latencies or [np.nan]) * 1e3
        return {
            "frames": count,
            "frames_per_second": (count - 1) / seconds if seconds > 0 else 0.0,
            "latency_median_ms": float(np.median(latency)),
            "latency_p95_ms": float(np.percentile(latency, 95)),
            "frame_age_median_ms": float(np.median(np.array(self.ages or [np.nan]) * 1e3)),
            "held_frames": self.held,
        }


def use_threads(threads: int | None = None) -> int:
    """Set torch's threads for live rendering; default: every core. Measured on 2 quiet cores
    (bench/live.py): 2 render threads gave 1.3-1.4x the frame rate of 1 and a lower latency
    (capture, landmarks and the window are light); on cores busy with other work, fewer threads
    can be faster (``--threads``). Returns the number set."""
    import os

    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(cores or 1, 1)
    torch.set_num_threads(threads)
    return threads


def default_workers(head, threads: int) -> int:
    """Render worker processes for live: 2 on a CPU with 2 or more render threads (measured
    on 2 cores, bench/live.py: 1.6-1.9x the frame rate of rendering in turn with the
    landmarks, ~20 ms more latency), else 1 (in turn; a GPU renders in this process)."""
    return 2 if head.device.type == "cpu" and threads >= 2 else 1


def dropped_fraction(source: FrameSource) -> float:
    """Frames the source had that were never rendered, as a fraction of all it had."""
    skipped = getattr(source, "skipped", 0)
    total = source.captured + skipped
    return (source.dropped + skipped) / total if total else 0.0


def dropped_percent(source: FrameSource) -> str:
    return f"{100 * dropped_fraction(source):.0f}% of camera frames dropped"


@dataclass(frozen=True)
class LiveOptions:
    window: bool = True
    virtual_camera: bool = False
    out: Path | None = None
    seconds: float | None = None  # stop after this long (None: until the source ends / Ctrl-C)
    status_line: bool = True  # the live status line on the terminal
    workers: int = 1  # > 1: render in this many worker processes (inference.workers)


def run_live(
    session: LiveSession,
    source: FrameSource,
    options: LiveOptions,
    camera: VirtualCamera | None = None,
) -> LiveStats:
    """Run until the source ends, ``seconds`` pass, the window closes or Ctrl-C. A camera
    that breaks off mid-run is a UserError, raised after everything is closed and the
    recording so far finished (the window holds the last frame until then). ``camera``: a
    virtual camera opened already (else ``options.virtual_camera`` opens one); closed here."""
    pool = (
        start_pool(session.head, session.person, options.workers) if options.workers > 1 else None
    )
    try:
        return _run(session, source, options, camera, pool)
    finally:
        if pool is not None:
            pool.close()


def _run(session, source, options, camera, pool) -> LiveStats:
    preview, note = (
        open_preview(f"talkinghead live ({source.name})") if options.window else (None, None)
    )
    if note:
        print(f"live: note: {note}")
    stats = LiveStats()
    try:
        if camera is None and options.virtual_camera:
            camera = VirtualCamera(session.size, source.fps)
        if camera is not None:
            print(f"live: virtual camera {camera.device} ({session.size}x{session.size})")
        recording = Recording(options.out, source.fps, session.mark) if options.out else None
        try:
            _loop(session, source, options, stats, preview, camera, recording, pool)
        finally:
            for output in (camera, recording):
                if output is not None:
                    output.close()
            if recording is not None:
                if recording.written:
                    print(f"live: recorded -> {options.out}")
                print(f"live: {recording.note}")
        if source.error and preview is not None and not preview.closed:
            _hold(preview, f"camera lost ({source.error}): close the window to quit")
    finally:
        if preview is not None:
            preview.close()
    if source.error:
        raise UserError(f"{source.name}: camera lost mid-run ({source.error})")
    return stats


def _loop(session, source, options, stats, preview, camera, recording, pool) -> None:
    started, last_status, status = None, 0.0, "starting"

    def idle() -> bool:
        """Between frames: keep the window responsive; False once it is closed."""
        if preview is not None:
            preview.pump()
        return preview is None or not preview.closed

    with source:
        frames = (
            _in_turn(session, source, idle)
            if pool is None
            else _pooled(session, source, idle, pool)
        )
        for shown, item, age in frames:
            started = started or item.captured_at
            stats.add(shown.latency_s, shown.face_found, age)
            if camera is not None:
                camera.send(shown.image)
            if recording is not None:
                recording.write(shown.image, item.index)
            now = time.perf_counter()
            if now - last_status >= STATUS_EVERY:
                status, last_status = stats.status(source), now
                if shown.message:
                    status += f"; {shown.message}"
                if options.status_line:
                    print(f"\rlive: {status}\033[K", end="", file=sys.stderr, flush=True)
            if preview is not None:
                preview.show(shown.image, status)
                if preview.closed:
                    break
            if options.seconds is not None and now - started >= options.seconds:
                break
    if options.status_line and last_status:
        print(file=sys.stderr)


def _in_turn(session: LiveSession, source: FrameSource, idle) -> Iterator[tuple]:
    """(shown, captured, age) for each newest frame: landmarks, render, mark, in turn."""
    while True:
        item = source.take(timeout=0.1)
        if item is None:
            if source.ended or not idle():
                return
            continue
        age = time.perf_counter() - item.captured_at
        yield session.step(item.frame, item.captured_at), item, age


def _pooled(session: LiveSession, source: FrameSource, idle, pool: RenderPool) -> Iterator[tuple]:
    """As :func:`_in_turn`, with the renders in ``pool``'s workers: a frame is taken whenever a
    worker is idle, its landmarks found here while the others render; shown in capture order."""
    waiting: deque[tuple] = deque()  # (captured, age, job or None: no face), capture order
    done: dict[int, np.ndarray] = {}
    submitted: dict[int, float] = {}
    job = 0
    while True:
        while pool.free:
            item = source.take(timeout=0.0 if waiting else 0.1)
            if item is None:
                break
            age = time.perf_counter() - item.captured_at
            targets = session.prepare(item.frame, item.captured_at)
            if targets is None:
                waiting.append((item, age, None))
                continue
            pool.submit(job, targets)
            submitted[job] = time.perf_counter()
            waiting.append((item, age, job))
            job += 1
        if not waiting:
            if source.ended or not idle():
                return
            continue
        for finished, frames in pool.collect(timeout=0.005 if pool.free else None):
            session.add_render_time(time.perf_counter() - submitted.pop(finished))
            done[finished] = frames[0]
        while waiting and (waiting[0][2] is None or waiting[0][2] in done):
            item, age, key = waiting.popleft()
            face = None if key is None else done.pop(key)
            yield session.shown(face, item.captured_at), item, age


def _hold(preview, status: str) -> None:
    """Keep showing the last frame, with why, until the window is closed (or Ctrl-C)."""
    print(f"live: {status}", file=sys.stderr)
    preview.status.configure(text=status)
    while not preview.closed:
        preview.pump()
        time.sleep(0.05)


def summary_line(summary: dict, source: FrameSource) -> str:
    """The run in one line, for the terminal."""
    line = (
        f"live: {summary['frames']} frames, {summary['frames_per_second']:.1f} frames/s, latency "
        f"median {summary['latency_median_ms']:.0f} ms, 95th percentile "
        f"{summary['latency_p95_ms']:.0f} ms, {dropped_percent(source)}"
    )
    if summary["held_frames"]:
        line += f"; no face in {summary['held_frames']} frame(s): the last frame held"
    return line
