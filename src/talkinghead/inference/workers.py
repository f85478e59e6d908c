"""Render workers: one person's frames rendered in worker processes (live mode).

Each live frame is its landmarks (dlib, which holds Python's GIL), a batch-1 render and the
marking, one after another. On two cores a render keeps both only partly busy (its
threads meet at every layer), and a thread beside it cannot help: dlib would hold the GIL, and
a helper process would stall the render's threads, which wait for each other at every layer.
With workers of one thread each, job i renders in worker i mod N on its own, while the main
process finds the next landmarks and marks the last frame. The cost is latency: a job waits for
its worker's render at single-thread speed. (``animate`` renders batches of 8, which keep two
threads busy: there, 2 workers of one thread rendered no faster than one process of two, and
starting them costs ~3 s.)

    pool = RenderPool(head.frame_renderer(person), workers=2, warm=person.reference_landmarks[None])
    pool.submit(job, targets)          # targets [1,68,2] crop pixels; only while pool.free
    for job, face in pool.collect(0.01): ...
    pool.close()
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

import numpy as np

READY = "ready"


class WorkerError(RuntimeError):
    """A render worker failed (its message says why) or died."""


class RenderPool:
    """``workers`` processes, each with ``renderer`` (pickled: the network and the person) and
    ``threads`` torch / ONNX Runtime threads. Jobs are rendered one per worker at a time."""

    def __init__(self, renderer: Callable, workers: int, threads: int = 1, warm=None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        self._conns: list[Connection] = []
        self._procs = []
        try:
            for number in range(workers):
                parent, child = context.Pipe()
                proc = context.Process(
                    target=_serve,
                    args=(child, renderer, threads, warm),
                    name=f"talkinghead render {number}",
                    daemon=True,
                )
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:  # each has loaded and rendered once
                reply = self._receive(conn)
                if reply != READY:
                    raise WorkerError(f"render worker did not start: {reply!r}")
        except BaseException:
            self.close()
            raise
        self._free = list(range(workers))
        self._jobs: dict[int, object] = {}  # worker -> the job it renders

    @property
    def workers(self) -> int:
        return len(self._conns)

    @property
    def free(self) -> bool:
        """A worker is idle: :meth:`submit` may be called."""
        return bool(self._free)

    @property
    def busy(self) -> int:
        return len(self._jobs)

    def submit(self, job, landmarks: np.ndarray) -> None:
        """Render ``landmarks [T,68,2]`` in the next idle worker; ``job`` names the result."""
        if not self._free:
            raise RuntimeError("no idle render worker (check RenderPool.free)")
        worker = self._free.pop(0)
        self._conns[worker].send(np.ascontiguousarray(landmarks, np.float64))
        self._jobs[worker] = job

    def collect(self, timeout: float | None = 0.0) -> list[tuple[object, np.ndarray]]:
        """Finished jobs as ``(job, frames [T,S,S,3] uint8)``, waiting up to ``timeout`` s
        (None: until one finishes) when none has; [] when nothing is being rendered."""
        if not self._jobs:
            return []
        busy = [self._conns[w] for w in self._jobs]
        done = []
        for conn in wait(busy, timeout):
            worker = self._conns.index(conn)
            frames = self._receive(conn)
            if not isinstance(frames, np.ndarray):
                raise WorkerError(f"render worker failed: {frames}")
            done.append((self._jobs.pop(worker), frames))
            self._free.append(worker)
        return done

    def _receive(self, conn: Connection):
        try:
            return conn.recv()
        except (EOFError, OSError):
            codes = [p.exitcode for p in self._procs if p.exitcode is not None]
            code = codes[0] if codes else "?"
            raise WorkerError(f"a render worker died (exit code {code})") from None

    def close(self) -> None:
        """Stop the workers (waits briefly for a render in progress)."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # BrokenPipeError: it has gone already
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs, self._jobs, self._free = [], [], {}, []

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_pool(head, person, workers: int) -> RenderPool:
    """Render workers for ``person`` with ``head``'s renderer (PyTorch or its backend), the
    caller's torch threads shared out among them."""
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    renderer = head.frame_renderer(person)
    return RenderPool(renderer, workers, threads, warm=person.reference_landmarks[None])


def _serve(conn: Connection, renderer: Callable, threads: int, warm) -> None:
    """A worker: render each landmarks array received, send the frames (or why it failed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    import torch

    from talkinghead.device import keep_freed_memory

    try:
        torch.set_num_threads(threads)
        keep_freed_memory()
        if hasattr(renderer, "num_threads"):  # ONNX Runtime: its own threads
            renderer.num_threads = threads
        if warm is not None:
            renderer(warm, 1)
        conn.send(READY)
    except Exception as exc:  # the main process reports it
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    while True:
        try:
            landmarks = conn.recv()
        except (EOFError, OSError):  # the main process has gone
            return
        if landmarks is None:
            return
        try:
            frames = renderer(landmarks, len(landmarks))
        except Exception as exc:
            conn.send(f"{type(exc).__name__}: {exc}")
            return
        conn.send(frames)
