"""Stages beside each other (inference/overlap.py): same frames, same errors, nothing left
running."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from talkinghead.errors import UserError
from talkinghead.inference.overlap import BackgroundSink, prefetch
from talkinghead.inference.render import AnimateOptions, StageTimes, animate_frames


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetch_keeps_order_and_runs_ahead_by_at_most_its_size():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    stream = prefetch(items(), 3, "t-ahead")
    assert next(stream) == 0
    time.sleep(0.3)  # the producer fills the queue, then waits
    assert 2 <= len(produced) <= 5  # 1 taken + 3 queued + 1 blocked in put
    assert [0, *stream] == list(range(20))
    assert not _threads("t-ahead")


def test_prefetch_raises_the_producers_error_in_its_place():
    def items():
        yield 1
        yield 2
        raise UserError("driver.mp4: face lost")

    seen = []
    with pytest.raises(UserError, match=r"driver\.mp4: face lost"):
        for item in prefetch(items(), 4, "t-error"):
            seen.append(item)
    assert seen == [1, 2]
    assert not _threads("t-error")


def test_closing_early_stops_the_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    stream = prefetch(endless(), 2, "t-close")
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert not _threads("t-close")


def test_sink_consumes_every_item_in_order_and_reports_its_error():
    seen = []
    with BackgroundSink(seen.append, 2, "t-sink") as sink:
        for i in range(50):
            sink.put(i)
    assert seen == list(range(50)) and not _threads("t-sink")

    def fail(item):
        if item == 3:
            raise OSError("out.mp4: disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundSink(fail, 2, "t-sink-error") as sink:
        for i in range(100):
            sink.put(i)
    assert not _threads("t-sink-error")


def test_overlapped_animation_gives_the_same_frames_as_one_stage_after_another(
    head, person, clip_frames
):
    driver = list(clip_frames[:20])
    times = {True: StageTimes(), False: StageTimes()}
    frames = {
        overlap: np.stack(
            list(
                animate_frames(
                    head,
                    person,
                    iter(driver),
                    AnimateOptions(batch_size=4, overlap=overlap),
                    times[overlap],
                )
            )
        )
        for overlap in (True, False)
    }
    assert frames[True].shape == (20, 64, 64, 3)
    np.testing.assert_array_equal(frames[True], frames[False])
    for overlap in (True, False):
        assert times[overlap].frames == 20
        assert {"decode", "landmarks", "render"} <= times[overlap].seconds.keys()
        assert times[overlap].seconds["landmarks"] > 0
