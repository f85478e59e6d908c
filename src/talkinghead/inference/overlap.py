"""Stages that run beside each other: decode and landmarks ahead of the renderer, marking and
encoding behind it.

Rendering spends its time in PyTorch kernels that release the GIL, dlib and PyAV in C++ and C:
on two cores, the stages around the renderer fit into the gaps it leaves (bench/animate.py
measures the gain). Queues are bounded, so memory stays bounded by a few batches, and an error in
any stage reaches the caller as if the stages ran one after another.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.1  # how often a blocked stage looks whether the other side has stopped


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable[T], size: int, name: str = "prefetch") -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``size`` items ahead of the caller.

    The items come out in order; an exception raised while producing one is raised here, in
    its place. Closing the returned iterator early (``break``, an error downstream) stops the
    thread at its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundSink:
    """Apply ``consume(item)`` to every item put, in order, in a background thread.

    ``put`` blocks while ``size`` items wait; an error in ``consume`` is raised by the next
    ``put`` or by ``close`` (``with`` closes: it waits for every item to be consumed).
    """

    def __init__(self, consume: Callable[[T], object], size: int, name: str = "sink"):
        self._consume = consume
        self._buffer: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._buffer.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._consume(item)
                except BaseException as error:  # raised in the caller's thread
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item: T) -> None:
        self._raise()
        while True:
            try:
                self._buffer.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Wait for every item put so far to be consumed, then stop the thread."""
        self._buffer.put(_DONE)
        self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundSink:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:  # the caller failed: stop without hiding its error
            self._stop.set()
            while True:  # make room for the thread to see the stop
                try:
                    self._buffer.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()
