"""`talkinghead prep` end to end on real video: outputs, resume, shards and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from talkinghead import assets, video
from talkinghead.config.prep import PrepConfig
from talkinghead.data import store
from talkinghead.data.preprocess import run_prep
from talkinghead.landmarks import detect, geometry

FAST = PrepConfig(crop_size=64, min_track_frames=8)
CLI = [sys.executable, "-m", "talkinghead.cli"]


def _manifest(root: Path) -> list[str]:
    return sorted(
        line
        for path in (root / "manifests").glob("*.jsonl")
        for line in path.read_text().splitlines()
    )


def test_prep_sample_clip_and_photo(tmp_path, clip_path, astronaut):
    summary = run_prep([clip_path, assets.astronaut_path()], tmp_path, PrepConfig(), progress=False)
    assert (summary.num_sources, summary.num_clips, summary.num_skipped) == (2, 2, 0)
    entries = store.load_manifest(tmp_path)
    by_video = {e.video: e for e in entries}
    assert set(by_video) == {"carphone_pristine", "astronaut"}
    assert store.video_index(entries) == {"astronaut": 0, "carphone_pristine": 1}

    clip = store.Clip.open(tmp_path / by_video["carphone_pristine"].clip)
    assert len(clip) == by_video["carphone_pristine"].num_frames >= 114  # >= 95% of 120
    frames = clip.frames([0, len(clip) - 1])
    assert frames.shape == (2, 256, 256, 3) and frames.dtype == np.uint8
    assert clip.landmarks.min() >= 0 and clip.landmarks.max() <= 256
    # One stable box per track: the face stays inside it, well away from the border.
    assert clip.landmarks[..., 0].min() > 20 and clip.landmarks[..., 0].max() < 236

    # Photo landmarks, mapped back to the photo, agree with dlib's own output there.
    photo = store.Clip.open(tmp_path / by_video["astronaut"].clip)
    transform = geometry.crop_transform(np.array(photo.header["box"]), 256)
    direct = detect.predict_landmarks(astronaut, detect.detect_faces(astronaut)[0].box)
    assert np.abs(transform.invert(photo.landmarks[0]) - direct).max() < 2.0


def test_clip_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 120, 32)[None, :] + np.linspace(0, 60, 32)[:, None]  # [32,32]
    crops = ramp[None, :, :, None] + np.array([0, 40, 80])[:, None, None, None]  # [3,32,32,1]
    crops = np.repeat(crops, 3, axis=-1).astype(np.uint8)
    landmarks = rng.random((3, 68, 2)).astype(np.float32) * 32
    store.write_clip(tmp_path / "a.thc", crops, landmarks, {"video": "v"}, quality=95)
    clip = store.Clip.open(tmp_path / "a.thc")
    np.testing.assert_array_equal(clip.landmarks, landmarks)
    assert clip.header["video"] == "v" and clip.header["num_frames"] == 3
    decoded = clip.frames([2, 0])
    assert np.abs(decoded.astype(int) - crops[[2, 0]]).mean() < 4  # JPEG at quality 95


def test_kill_and_resume_gives_the_same_manifest(tmp_path, short_videos):
    reference = tmp_path / "reference"
    run_prep([short_videos], reference, FAST, progress=False)
    assert len(_manifest(reference)) == 6

    resumed = tmp_path / "resumed"
    args = [
        *CLI,
        "prep",
        str(short_videos),
        "--out",
        str(resumed),
        "--size",
        "64",
        "--detect-every",
        "1",
        "--no-progress",
        "--preset",
        str(_preset(tmp_path)),
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list((resumed / "records").glob("*/*.json")) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before_kill = len(list((resumed / "records").glob("*/*.json")))
    assert 1 <= finished_before_kill < 6, "the kill must land mid-run"
    assert not (resumed / "manifests").exists()  # nothing half-done is listed

    done = subprocess.run(args, capture_output=True, text=True, check=True)
    assert f"({finished_before_kill} done earlier)" in done.stdout
    assert _manifest(resumed) == _manifest(reference)


def _preset(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text("prep:\n  crop_size: 64\n  min_track_frames: 8\n  detect_every: 1\n")
    return path


def test_shards_together_equal_the_whole(tmp_path, short_videos):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_prep([short_videos], whole, FAST, progress=False)
    first = run_prep([short_videos], split, FAST, shard=(0, 2), progress=False)
    second = run_prep([short_videos], split, FAST, shard=(1, 2), progress=False)
    assert first.num_clips >= 1 and second.num_clips >= 1
    assert first.num_clips + second.num_clips == 6
    assert _manifest(split) == _manifest(whole)


def test_parallel_workers_match_serial(tmp_path, short_videos):
    serial = run_prep([short_videos], tmp_path / "serial", FAST, progress=False)
    parallel = run_prep([short_videos], tmp_path / "parallel", FAST, num_workers=2, progress=False)
    assert serial.num_clips == parallel.num_clips == 6
    assert _manifest(tmp_path / "serial") == _manifest(tmp_path / "parallel")


@pytest.fixture()
def bad_inputs(tmp_path, clip_path, clip_frames, astronaut) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notmedia.mp4").write_text("this is not a video\n")
    data = clip_path.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    with video.VideoWriter(folder / "noface.mp4", fps=25) as writer:
        for i in range(20):
            writer.write(np.full((64, 64, 3), 40 + i, np.uint8))
    with av.open(str(folder / "empty.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # a valid file with no frames at all
    from PIL import Image

    other = np.asarray(Image.fromarray(clip_frames[0]).resize((528, 432)))
    group = np.zeros((512, 512 + 528, 3), np.uint8)
    group[:, :512], group[:432, 512:] = astronaut, other
    Image.fromarray(group).save(folder / "two_faces.png")
    return folder


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path, bad_inputs, clip_path):
    out = tmp_path / "out"
    summary = run_prep([bad_inputs, clip_path], out, FAST, progress=False)
    skipped = {
        json.loads(line)["source"].removeprefix("bad/"): json.loads(line)["reason"]
        for line in summary.skipped.read_text().splitlines()
    }
    assert "not a readable video" in skipped["notmedia.mp4"]
    assert "truncated.mp4" in skipped and "truncated.mp4" in skipped["truncated.mp4"]
    assert "no face found" in skipped["noface.mp4"]
    # FFmpeg drops a video stream that never got a frame, so the file has no video stream.
    assert "no video stream" in skipped["empty.mp4"] or "zero frames" in skipped["empty.mp4"]
    assert set(skipped) == {"notmedia.mp4", "truncated.mp4", "noface.mp4", "empty.mp4"}
    videos = {e.video for e in store.load_manifest(out)}
    assert videos == {"carphone_pristine", "bad"}  # the group photo's folder is its identity
    assert any("2 faces found, using the largest" in note for note in summary.notes)
    photo = next(e for e in store.load_manifest(out) if e.source == "bad/two_faces.png")
    box = np.array(store.Clip.open(out / photo.clip).header["box"])
    faces = detect.detect_faces(video.read_image(bad_inputs / "two_faces.png"))
    areas = [np.prod(f.box[2:] - f.box[:2]) for f in faces]
    largest, other = (faces[int(np.argmax(areas))], faces[int(np.argmin(areas))])
    centre = lambda b: (b[:2] + b[2:]) / 2  # noqa: E731
    assert np.all((box[:2] < centre(largest.box)) & (centre(largest.box) < box[2:]))
    assert not np.all((box[:2] < centre(other.box)) & (centre(other.box) < box[2:]))


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cases = [
        ["prep", "--shard", "3/2"],
        ["prep", "--size", "0"],
        ["prep", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")],
        ["prep", "--preset", "nonexistent-preset"],
    ]
    for args in cases:
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        if "missing.mp4" in args[1]:
            assert "missing.mp4: no such file" in result.stderr


def test_resume_refuses_other_settings(tmp_path, short_videos):
    run_prep([short_videos / "part0.mp4"], tmp_path, FAST, progress=False)
    with pytest.raises(Exception, match="crop_size"):
        run_prep([short_videos / "part0.mp4"], tmp_path, PrepConfig(), progress=False)
