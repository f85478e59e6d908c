"""The web page's Live tab: its per-session runner on real frames with the bundled model, then the
tab in a real browser (headless Debian Chromium whose fake webcam plays a real talking clip,
against `talkinghead web` started here): frames stream back, show a face, carry the watermark
and the visible SYNTHETIC label."""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_web import CHROMIUM, CHROMIUM_FLAGS, _serving

from talkinghead import assets
from talkinghead.errors import UserError
from talkinghead.inference import jobs
from talkinghead.landmarks.detect import detect_faces
from talkinghead.live import label
from talkinghead.live.session import NO_FACE, NO_FACE_YET
from talkinghead.provenance import detect_frames
from talkinghead.provenance.metadata import read_tags
from talkinghead.web import live as live_module
from talkinghead.web.app import DemoRunner, PersonCache, WebConfig
from talkinghead.web.live import LIVE_NOTICE, FrameFiles, LiveRunner

OUTPUT_SIZE = 256  # LiveSession's default output side
CAMERA_SECONDS = 2.0  # of the sample clip, played (looped) by Chromium's fake webcam


def _assert_marked_and_labelled(image: np.ndarray) -> None:
    """The invisible watermark is found, and the "SYNTHETIC" band is drawn as the label module
    draws it: white text, the picture darkened to a quarter around it."""
    assert image.shape == (OUTPUT_SIZE, OUTPUT_SIZE, 3) and image.dtype == np.uint8
    assert detect_frames([image]).marked
    colour, alpha = label._overlay(*image.shape[:2])
    band = image[: len(colour)].astype(np.float32)
    text = (alpha[..., 0] > 0.99) & (colour.min(axis=-1) > 250)
    shade = np.isclose(alpha[..., 0], label.BAND_OPACITY, atol=0.01) & (colour.max(axis=-1) < 1)
    assert text.sum() > 100 and shade.sum() > 1000
    assert band[text].min() >= 240  # the letters, over any face
    assert band[shade].max() <= 255 * (1 - label.BAND_OPACITY) + 2


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> DemoRunner:
    """The page's runner with the bundled default model (faces come out as faces)."""
    return DemoRunner(WebConfig(max_photos=2), tmp_path_factory.mktemp("out"))


@pytest.fixture()
def live(runner, tmp_path) -> LiveRunner:
    return LiveRunner(runner, tmp_path / "frames", max_sessions=2)


def test_live_runner_turns_webcam_frames_into_marked_labelled_frames(live, clip_frames):
    photo = assets.astronaut_path()
    updates = [live.step("browser-1", frame, [photo]) for frame in clip_frames[:10]]
    assert all(u.face_found for u in updates)
    first, last = updates[0].image, updates[-1].image
    _assert_marked_and_labelled(last)
    assert len(detect_faces(last)) == 1  # the astronaut's face, made by the model
    # The driver's motion moves the face (beyond the watermark's few levels).
    below_label = slice(label.label_height(OUTPUT_SIZE), None)
    motion = np.abs(first[below_label].astype(int) - last[below_label].astype(int)).mean()
    assert motion > 3.0, motion
    assert re.search(r"\d+\.\d frames/s, \d+ ms from frame to result", updates[-1].status)
    assert "feed-forward from astronaut.png" in updates[-1].status
    # The page is given the same frame as a PNG that says it is synthetic.
    shown = np.asarray(Image.open(updates[-1].path))
    assert np.array_equal(shown, last)
    assert read_tags(updates[-1].path)["statement"].startswith("SYNTHETIC")


def test_no_face_in_the_camera_holds_the_frame_and_says_so(live, clip_frames):
    photo = [assets.astronaut_path()]
    dark = np.zeros_like(clip_frames[0])
    before = live.step("browser-1", dark, photo)  # no face yet: the person's photo, marked
    assert not before.face_found and NO_FACE_YET in before.status.lower()
    _assert_marked_and_labelled(before.image)
    face = live.step("browser-1", clip_frames[0], photo)
    assert face.face_found and "no face" not in face.status.lower()
    gone = live.step("browser-1", dark, photo)
    assert not gone.face_found and NO_FACE in gone.status.lower()
    assert np.array_equal(gone.image, face.image)  # the last good frame, held
    back = live.step("browser-1", clip_frames[1], photo)
    assert back.face_found


def test_sessions_reuse_people_follow_changes_and_are_capped(
    live, runner, clip_frames, monkeypatch, tmp_path
):
    made = []
    personalize = jobs.personalize
    monkeypatch.setattr(
        jobs, "personalize", lambda *a, **k: made.append(a[1]) or personalize(*a, **k)
    )
    # A photo no earlier test used (the page's person cache is keyed by the photos' bytes).
    photo, other = tmp_path / "me.png", tmp_path / "other.png"
    Image.open(assets.astronaut_path()).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    shutil.copy(assets.astronaut_path(), other)
    frame = clip_frames[0]
    one = live.step("browser-1", frame, [photo], finetune_steps="auto")
    assert "feed-forward from me.png" in one.status and len(made) == 1
    # Another browser with the same photo: the cached feed-forward person, a session of its own.
    live.step("browser-2", frame, [photo], finetune_steps="0")
    assert len(made) == 1 and set(live.sessions) == {"browser-1", "browser-2"}
    # A person the first tab fine-tuned with these photos and setting is used as it is.
    tuned = live.sessions["browser-1"].live.person
    runner.people.put(PersonCache.key([other], None, runner.head.model_hash), tuned)
    changed = live.step("browser-1", frame, [other], finetune_steps="auto")
    assert "fine-tuned in an earlier run on other.png" in changed.status and len(made) == 1
    assert live.sessions["browser-1"].live.person is tuned
    # A new stream after a pause starts afresh (a person fine-tuned since would be used).
    kept = live.sessions["browser-1"]
    assert live.step("browser-1", frame, [other], finetune_steps="auto").face_found
    assert live.sessions["browser-1"] is kept
    gap = live_module.NEW_STREAM_GAP
    monkeypatch.setattr(live_module, "NEW_STREAM_GAP", 0.0)
    live.step("browser-1", frame, [other], finetune_steps="auto")
    assert live.sessions["browser-1"] is not kept and len(made) == 1
    monkeypatch.setattr(live_module, "NEW_STREAM_GAP", gap)
    # A third browser evicts the least recently used session and deletes its frames.
    folder = live.sessions["browser-2"].files.folder
    assert folder.is_dir()
    live.step("browser-3", frame, [photo], finetune_steps="0")
    assert set(live.sessions) == {"browser-1", "browser-3"} and not folder.exists()
    # A closed page forgets its session.
    folder = live.sessions["browser-3"].files.folder
    live.stop("browser-3")
    assert "browser-3" not in live.sessions and not folder.exists()


def test_live_runner_refuses_bad_input_with_a_message(live, clip_frames, tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(blank)
    frame = clip_frames[0]
    with pytest.raises(UserError, match="give 1 to 2 photos of the person, or a person file"):
        live.step("browser-1", frame, [])
    with pytest.raises(UserError, match=r"blank\.png: no face found"):
        live.step("browser-1", frame, [blank])
    with pytest.raises(UserError, match="auto or a number"):
        live.step("browser-1", frame, [assets.astronaut_path()], finetune_steps="many")


def test_frame_files_keep_only_the_newest(tmp_path):
    files = FrameFiles(tmp_path / "session", keep=3)
    images = [np.full((32, 32, 3), i, np.uint8) for i in range(5)]
    paths = [files.write(image) for image in images]
    assert sorted(p.name for p in (tmp_path / "session").iterdir()) == [p.name for p in paths[2:]]
    assert np.array_equal(np.asarray(Image.open(paths[-1])), images[-1])
    files.close()
    assert not (tmp_path / "session").exists()


# The browser test: the page's webcam is Chromium's fake camera playing a real clip.


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """The first seconds of the sample clip (a real talking face) as Y4M, the format Chromium's
    fake camera reads (it loops the file)."""
    path = tmp_path_factory.mktemp("camera") / "clip.y4m"
    with av.open(str(assets.sample_clip_path())) as source, av.open(str(path), "w") as out:
        decoded = source.streams.video[0]
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height = decoded.codec_context.width, decoded.codec_context.height
        stream.pix_fmt = "yuv420p"
        for index, frame in enumerate(source.decode(decoded)):
            if index >= CAMERA_SECONDS * 25:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path.resolve()  # Chromium needs an absolute path


@pytest.fixture(scope="module")
def live_browser(camera_clip):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    camera = [
        "--use-fake-ui-for-media-stream",  # allow the camera without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_clip}",
    ]
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *camera]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """`talkinghead web` with the bundled default model on a free local port."""
    command = [sys.executable, "-m", "talkinghead.cli", "web", "--finetune-steps", "0", "--port"]
    log_path = tmp_path_factory.mktemp("live-server") / "server.log"
    with _serving(command, log_path) as (url, process):
        yield url
        assert process.poll() is None, f"the server stopped:\n{log_path.read_text()}"


# The page's image, read back exactly as the browser decoded it (a fresh load of its address).
GRAB = """async (img) => {
    const copy = new Image();
    copy.src = img.src;
    await copy.decode();
    const canvas = document.createElement('canvas');
    canvas.width = copy.naturalWidth;
    canvas.height = copy.naturalHeight;
    canvas.getContext('2d').drawImage(copy, 0, 0);
    return canvas.toDataURL('image/png');
}"""


def _grab(page) -> np.ndarray:
    url = page.locator("#live-result img").evaluate(GRAB)
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.slow  # ~40-60 s on a busy 2-core machine: a server, a browser, a person, frames
def test_live_tab_streams_marked_frames_of_the_photo_driven_by_the_webcam(
    live_browser, live_server
):
    page = live_browser.new_page(viewport={"width": 1200, "height": 1000})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(live_server)
    # The photo of the first tab drives nothing until the Live tab's webcam is started.
    page.locator("#photos input[type=file]").set_input_files(str(assets.astronaut_path()))
    page.locator("#photos-preview img").first.wait_for()
    page.get_by_role("tab", name="Live").click()
    assert LIVE_NOTICE.split(" - ")[0].strip("*") in page.locator("#live-notice").inner_text()
    page.locator('#live-camera [title="grant webcam access"] button').click()
    page.locator('#live-camera button[aria-label="capture photo"]').click()  # "Record"

    # Frames come back: several distinct ones within a bounded time (a person is made first).
    status = page.locator("#live-status")
    status.get_by_text("frames/s").wait_for(timeout=120_000)
    result = page.locator("#live-result img")
    seen, deadline = set(), time.monotonic() + 60
    while len(seen) < 5 and time.monotonic() < deadline:
        seen.add(result.get_attribute("src"))
        time.sleep(0.05)
    assert len(seen) >= 5, seen
    assert all(Path(s).name.startswith("synthetic-live-") for s in seen)
    text = status.inner_text()
    assert "feed-forward from astronaut.png" in text and "no face" not in text.lower(), text

    # The frame on the page shows a face, carries the watermark and the label, and is shown
    # at full size under a label that says it is synthetic.
    image = _grab(page)
    box = result.bounding_box()
    assert result.is_visible() and box["width"] >= 200 and box["height"] >= 200, box
    assert "SYNTHETIC" in page.locator("#live-result").inner_text()
    # Stop the stream (the checks below are quicker on an idle server and browser).
    page.locator("#live-camera button", has_text="Stop").click()
    assert len(detect_faces(image)) == 1
    _assert_marked_and_labelled(image)
    # The fake camera and the stream reached nothing but this server.
    elsewhere = [u for u in requests if not u.startswith((live_server, "blob:", "data:"))]
    assert not elsewhere, elsewhere
    page.close()
