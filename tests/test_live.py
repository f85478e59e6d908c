"""Live mode on real media with the tiny model: the session (landmarks, hold and recover,
watermark and label), capture that drops rather than queues, and ``talkinghead live``."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from talkinghead import assets, video
from talkinghead.cli import main
from talkinghead.errors import UserError
from talkinghead.inference.workers import RenderPool, WorkerError
from talkinghead.live import LiveSession, app, capture, label
from talkinghead.live.session import NO_FACE, NO_FACE_YET
from talkinghead.provenance import detect_frames, verify_file

SIZE = 256


@pytest.fixture()
def session(head, person) -> LiveSession:
    return LiveSession(head, person, smooth_window=1, size=SIZE)


def _band_is_burnt_in(image: np.ndarray) -> None:
    """The SYNTHETIC band: its text pixels pure white, the rest darkened to at most 1/4."""
    colour, alpha = label._overlay(*image.shape[:2])
    band = image[: len(colour)].astype(int)
    text = (alpha[..., 0] == 1) & (colour.min(axis=-1) == 255)
    assert text.sum() > 0.02 * text.size  # the word is there, not a few stray pixels
    assert (band[text] == 255).all()
    assert (band[colour.max(axis=-1) == 0] <= 64).all()  # behind it, the picture darkened


def test_session_renders_marked_labelled_frames(session, head, person, clip_frames):
    shown = [session.step(frame) for frame in clip_frames[:12]]
    assert all(s.face_found and s.message is None for s in shown)
    assert all(s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8 for s in shown)
    assert all(s.latency_s > 0 for s in shown)
    # The first frame with a face is the reference: the person in their own pose, exactly.
    face = head.render(person, person.reference_landmarks[None], 1)[0]
    enlarged = np.asarray(Image.fromarray(face).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    expected = label.burn_label(session.mark.frame(enlarged, 0))
    assert np.array_equal(shown[0].image, expected)
    # The driver moves, so the frames differ; each carries the band and the watermark.
    assert np.abs(shown[-1].image.astype(int) - shown[0].image).mean() > 0.5
    for s in shown:
        _band_is_burnt_in(s.image)
    found = detect_frames([s.image for s in shown], fps=session.fps)
    assert found.marked and found.payload_id == session.mark.marker.payload_id
    assert session.times.frames == 12 and session.times.seconds["render"] > 0


def test_face_leaving_holds_the_last_frame_and_recovers(session, clip_frames):
    black = np.zeros_like(clip_frames[0])
    before = [session.step(black) for _ in range(2)]
    for s in before:  # no face yet: the person's photo, marked and labelled
        assert not s.face_found and s.message == NO_FACE_YET
        _band_is_burnt_in(s.image)
    assert detect_frames([before[0].image]).marked
    faces = [session.step(frame) for frame in clip_frames[:8]]
    assert all(s.face_found for s in faces)
    # The face leaves mid-track (between detections): held at once, not guessed in the dark.
    held = [session.step(black) for _ in range(6)]
    for s in held:
        assert not s.face_found and s.message == NO_FACE
        assert np.array_equal(s.image, faces[-1].image)
    back = [session.step(frame) for frame in clip_frames[8:16]]
    assert all(s.face_found and s.message is None for s in back)
    assert not np.array_equal(back[0].image, faces[-1].image)
    # Its reference is still the first face: the frame it returns to is rendered, not reset.
    session.reset()
    assert session.reference is None
    session.step(clip_frames[20])
    assert session.reference is not None


class _Frames(capture.FrameSource):
    """A source whose frames the test publishes by hand (no thread): deterministic."""

    name = "test frames"

    def _read(self) -> None:
        self._stop.wait()


def test_capture_keeps_only_the_newest_frame():
    source = _Frames()
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(5)]
    for index, frame in enumerate(frames):
        source._publish(frame, index)
    item = source.take(timeout=0)
    assert item.index == 4 and np.array_equal(item.frame, frames[4])
    assert source.take(timeout=0) is None  # nothing queued behind it
    assert (source.captured, source.taken, source.dropped) == (5, 1, 4)
    source._publish(frames[0], 5)
    assert source.dropped == 4  # one waiting to be taken is not dropped (yet)
    assert source.take(timeout=0).index == 5


def test_file_played_as_camera_drops_frames_for_a_slow_consumer(clip_path):
    """A consumer slower than the clip's 30 frames/s sees fewer frames, always the newest."""
    seen = []
    with capture.FileSource(clip_path) as source:
        for _ in range(6):
            last = seen[-1] if seen else -1
            # A slow render: wait until the camera has delivered 3 more frames.
            while source.newest_index < last + 3 and not source.ended:
                time.sleep(0.005)
            newest = source.newest_index
            item = source.take(timeout=5)
            assert item.index >= newest  # the newest at the time, never an older queued one
            seen.append(item.index)
    assert all(b - a >= 3 for a, b in itertools.pairwise(seen))
    assert source.captured > len(seen) and source.dropped >= 2 * (len(seen) - 1)
    assert source.error is None


def test_camera_lost_mid_run_stops_cleanly_and_keeps_the_recording(
    head, person, clip_path, tmp_path
):
    """A real FFmpeg capture device (lavfi) playing 45 frames of the clip in real time, then
    gone, as an unplugged webcam."""
    device = capture.CameraSource(f"movie={clip_path},trim=end_frame=45,realtime", "lavfi")
    assert device.fps == pytest.approx(30000 / 1001)
    session = LiveSession(head, person)
    out = tmp_path / "lost.mp4"
    options = app.LiveOptions(window=False, out=out, status_line=False)
    with pytest.raises(UserError, match=r"camera lost mid-run \(the camera stopped delivering"):
        app.run_live(session, device, options)
    assert session.times.frames >= 2 and device.captured == 45  # faces rendered until the end
    recorded = np.stack(list(video.read_frames(out)))
    assert recorded.shape[1:] == (SIZE, SIZE, 3) and len(recorded) >= session.times.frames
    report = verify_file(out)
    assert report.manifest.synthetic and report.watermark.marked


@pytest.mark.parametrize(
    ("backend", "workers"), [("torch", 1), ("onnxruntime", 1), ("torch", 2), ("onnxruntime", 2)]
)
def test_cli_live_records_a_marked_video(
    bundle, clip_path, tmp_path, capsys, monkeypatch, backend, workers
):
    out = tmp_path / "live.mp4"
    onnx_frames, onnx_sent = [], []  # frames ONNX Runtime rendered here; renderers sent
    if backend == "onnxruntime":
        from talkinghead.inference.onnx_backend import OnnxRenderer

        render_float, frame_renderer = OnnxRenderer.render_float, OnnxRenderer.frame_renderer

        def counted(self, person, landmarks, batch_size=8):
            onnx_frames.append(len(landmarks))
            return render_float(self, person, landmarks, batch_size)

        def sent(self, person):
            onnx_sent.append(person)
            return frame_renderer(self, person)

        monkeypatch.setattr(OnnxRenderer, "render_float", counted)
        monkeypatch.setattr(OnnxRenderer, "frame_renderer", sent)
    code = main(
        [
            "live",
            "--source",
            str(assets.astronaut_path()),
            "--driver",
            str(clip_path),
            "--no-window",
            "--out",
            str(out),
            "--seconds",
            "2",
            "--model",
            str(bundle),
            "--finetune-steps",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--backend",
            backend,
            "--workers",
            str(workers),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"recorded -> {out}" in printed and "frames/s, latency median" in printed
    frames = np.stack(list(video.read_frames(out)))
    assert frames.shape[1:] == (SIZE, SIZE, 3) and len(frames) >= 2
    onnx_rendered = len(onnx_sent) == 1 if workers > 1 else sum(onnx_frames) >= 2
    assert onnx_rendered == (backend == "onnxruntime")
    report = verify_file(out)
    assert report.marked and report.watermark.marked and report.manifest.synthetic
    assert report.tags["motion_mode"] == "relative"
    band = frames[0, : label.label_height(SIZE)].astype(int)
    assert band.max() >= 200 and np.median(band) <= 70  # the label survived H.264


def test_ctrl_c_closes_everything_and_exits_130(bundle, clip_path, tmp_path):
    out = tmp_path / "interrupted.mp4"
    command = [
        *(sys.executable, "-m", "talkinghead.cli", "live", "--no-window", "--out", str(out)),
        *("--source", str(assets.astronaut_path()), "--driver", str(clip_path)),
        *("--model", str(bundle), "--finetune-steps", "0", "--device", "cpu"),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner started in the background of a shell without job control ignores SIGINT, and
        # its children inherit that: the user's Ctrl-C reaches a live that has the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = ""
    while "frames/s" not in seen and process.poll() is None:  # running live: interrupt it
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    printed, errors = process.communicate(timeout=60)
    assert process.returncode == 130, seen + errors
    assert errors.rstrip().endswith("talkinghead live: interrupted")
    assert "Traceback" not in seen + errors
    # The recording so far is kept, marked and labelled.
    assert f"recorded -> {out}" in printed and verify_file(out).manifest.synthetic


@pytest.fixture()
def display(monkeypatch):
    """A virtual X display (Xvfb picks a free number), as DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("no Xvfb here to open the preview window on (apt-get install xvfb)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=[write],
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as numbers:
        name = f":{numbers.readline().strip()}"
    monkeypatch.setenv("DISPLAY", name)
    yield name
    server.terminate()
    server.wait(timeout=10)


def test_preview_window_shows_the_labelled_frame(display, session, clip_frames):
    from PIL import ImageGrab

    from talkinghead.live.outputs import open_preview

    shown = session.step(clip_frames[0])
    preview, note = open_preview("talkinghead live (test)")
    assert note is None
    with preview:
        preview.show(shown.image, "12.0 frames/s, latency 80 ms")
        preview.root.update()
        x, y = preview.picture.winfo_rootx(), preview.picture.winfo_rooty()
        screen = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))
        on_screen = screen[y : y + SIZE, x : x + SIZE]
        assert preview.status.cget("text") == "12.0 frames/s, latency 80 ms"
    assert np.array_equal(on_screen, shown.image)  # the frame as it is, SYNTHETIC band and all


def test_no_display_means_no_window_with_a_note(monkeypatch):
    from talkinghead.live.outputs import open_preview

    monkeypatch.delenv("DISPLAY", raising=False)
    preview, note = open_preview("talkinghead live (test)")
    assert preview is None and note.endswith("running as --no-window")


@pytest.mark.skipif(Path("/dev/video9").exists(), reason="this machine has a /dev/video9")
def test_cli_live_without_a_camera_is_a_one_line_error(capsys):
    code = main(["live", "--source", str(assets.astronaut_path()), "--camera", "9"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == "talkinghead live: error: /dev/video9: no such camera\n"


def test_virtual_camera_without_a_backend_is_a_one_line_error(bundle, clip_path, capsys):
    if importlib.util.find_spec("pyvirtualcam") is None:
        pytest.skip("pyvirtualcam is not installed (the live extra)")
    command = ["live", "--source", str(assets.astronaut_path()), "--driver", str(clip_path)]
    command += ["--virtual-camera", "--no-window", "--seconds", "1", "--model", str(bundle)]
    code = main([*command, "--finetune-steps", "0", "--device", "cpu"])
    if code == 0:
        pytest.skip("this machine has a virtual camera device")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("talkinghead live: error: virtual camera: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_live_refuses_a_still_image_as_driver(capsys):
    photo = str(assets.astronaut_path())
    assert main(["live", "--source", photo, "--driver", photo, "--no-window"]) == 2
    assert capsys.readouterr().err == (
        f"talkinghead live: error: {photo}: a still image: the driver must be a video\n"
    )


class _Listed(capture.FrameSource):
    """Each take hands out the next frame of a list at once, none dropped, captured 1/30 s
    apart: the same frames reach the session however fast the loop runs."""

    name = "listed frames"

    def __init__(self, frames):
        super().__init__()
        self._frames, self._start = list(frames), time.perf_counter()

    def _read(self) -> None:
        self._stop.wait()

    def take(self, timeout=None):
        if self.taken == len(self._frames):
            self.ended = True
            return None
        self.taken += 1
        index = self.taken - 1
        return capture.Captured(self._frames[index], index, self._start + index / 30)


def test_render_workers_show_what_rendering_in_turn_shows(head, person, clip_frames):
    """Frames with and without a face, through two worker processes: the same frames, marks
    and messages, in capture order, as the session's own step."""
    black = np.zeros_like(clip_frames[0])
    frames = [black, *clip_frames[:6], black, black, *clip_frames[6:10]]
    in_turn = LiveSession(head, person, smooth_window=1, size=SIZE)
    source = _Listed(frames)
    expected = [in_turn.step(f.frame, f.captured_at) for f in iter(source.take, None)]
    pooled = LiveSession(head, person, smooth_window=1, size=SIZE)
    pooled.mark = in_turn.mark  # each session's watermark has its own id
    threads = torch.get_num_threads()  # the same kernels as in turn: the same values
    with RenderPool(head.frame_renderer(person), 2, threads) as pool:
        shown = [out for out, _, _ in app._pooled(pooled, _Listed(frames), lambda: True, pool)]
        assert pool.workers == 2 and pool.busy == 0
    assert [s.message for s in shown] == [s.message for s in expected]
    assert [s.face_found for s in shown] == [False] + [True] * 6 + [False] * 2 + [True] * 4
    for ours, theirs in zip(shown, expected, strict=True):
        np.testing.assert_array_equal(ours.image, theirs.image)
    assert pooled.times.frames == 10 and pooled.times.held_frames == 3


def test_render_pool_renders_as_the_head_and_reports_a_failed_worker(head, person, clip_frames):
    targets = person.reference_landmarks[None] + np.random.default_rng(0).normal(0, 1, (3, 68, 2))
    pool = RenderPool(head.frame_renderer(person), 2, torch.get_num_threads())
    try:
        for job in range(2):
            pool.submit(job, targets[job : job + 1])
        assert not pool.free  # one job per worker at a time
        done = dict(pool.collect(None))
        while len(done) < 2:
            done |= dict(pool.collect(None))
        for job in range(2):
            np.testing.assert_array_equal(done[job], head.render(person, targets[job : job + 1]))
        pool.submit("bad", np.zeros((1, 5), np.float64))  # not landmarks: the worker fails
        with pytest.raises(WorkerError, match="render worker failed"):
            while not pool.collect(None):
                pass
    finally:
        processes = list(pool._procs)
        pool.close()
    assert processes and not any(p.is_alive() for p in processes)
