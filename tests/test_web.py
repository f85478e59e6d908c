"""The web demo: its runner on real media, then the page in a real browser (headless Debian
Chromium driven by Playwright, against `talkinghead web` started here)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from talkinghead import assets, video
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.errors import UserError
from talkinghead.inference.render import AnimateOptions
from talkinghead.models import build_models
from talkinghead.web.app import SYNTHETIC_NOTICE, DemoRunner, WebConfig, driver_seconds

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What a machine with no internet needs: nothing Chromium does on its own reaches out.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHORT_FRAMES = 20


@pytest.fixture(scope="module")
def media(tmp_path_factory, clip_frames) -> dict[str, Path]:
    """A tiny model bundle, a short driver, and bad inputs, all in one folder."""
    folder = tmp_path_factory.mktemp("web")
    preset = presets.load("tiny")
    torch.manual_seed(0)
    bundle = folder / "tiny.safetensors"
    save_weights(bundle, dict(build_models(preset.model)._asdict()), preset, half=True)
    driver = folder / "driver.mp4"
    with video.VideoWriter(driver, 25) as writer:
        for frame in clip_frames[:SHORT_FRAMES]:
            writer.write(frame)
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(folder / "blank.png")
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "huge.png")  # ~3 MB
    (folder / "broken.mp4").write_text("not a video\n" * 100)
    return {
        "bundle": bundle,
        "driver": driver,
        "long_driver": assets.sample_clip_path(),  # 4 s
        "blank": folder / "blank.png",
        "huge": folder / "huge.png",
        "broken": folder / "broken.mp4",
    }


@pytest.fixture(scope="module")
def runner(media, tmp_path_factory) -> DemoRunner:
    config = WebConfig(media["bundle"], max_video_seconds=2.0)
    return DemoRunner(config, tmp_path_factory.mktemp("out"))


def test_runner_makes_a_video_named_and_labelled_synthetic(runner, media):
    stages = []
    result = runner.run(
        [assets.astronaut_path()],
        media["driver"],
        AnimateOptions(side_by_side=True),
        progress=lambda *args, desc="": stages.append(desc),
    )
    assert result.video.name.startswith("synthetic-") and result.video.suffix == ".mp4"
    assert result.summary.startswith(SYNTHETIC_NOTICE)
    assert f"{SHORT_FRAMES} frames at 25.00 fps, feed-forward" in result.summary
    assert stages == ["finding the face in the photos", "rendering frames"]
    assert len(list(video.read_frames(result.video))) == SHORT_FRAMES
    # The next run clears the previous result (Gradio keeps its own copy).
    again = runner.run([assets.astronaut_path()], media["driver"])
    assert not result.video.exists() and again.video.exists()


@pytest.mark.parametrize(
    ("photos", "driver", "message"),
    [
        ([], "driver", "give 1 to 8 photos"),
        (["astronaut"] * 9, "driver", "give 1 to 8 photos"),
        (["astronaut"], None, "give a driving video"),
        (["astronaut"], "long_driver", "longer than the limit of 2 s"),
        (["astronaut"], "broken", "broken.mp4: not a readable video"),
        (["blank"], "driver", "blank.png: no face found"),
    ],
)
def test_runner_refuses_bad_input_with_a_message(runner, media, photos, driver, message):
    paths = [assets.astronaut_path() if p == "astronaut" else media[p] for p in photos]
    with pytest.raises(UserError, match=message):
        runner.run(paths, media[driver] if driver else None)


def test_driver_length_without_a_frame_count_is_counted(tmp_path):
    # Matroska (like a browser's WebM) states no frame count.
    path = tmp_path / "driver.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(50):
            image = np.full((64, 64, 3), i * 5, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert video.probe(path).num_frames == 0
    assert driver_seconds(path, limit=10.0) == pytest.approx(2.0)
    assert driver_seconds(path, limit=1.0) > 1.0  # stops counting past the limit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    """`talkinghead web` on a free local port; its log is shown if it fails to start."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    port = _free_port()
    command = [sys.executable, "-m", "talkinghead.cli", "web", "--port", str(port)]
    command += ["--model", str(media["bundle"]), "--max-upload-mb", "1"]
    command += ["--max-video-seconds", "2"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"`talkinghead web` did not start:\n{log_path.read_text()}")
            time.sleep(0.5)
    yield url
    process.terminate()  # SIGTERM: Gradio closes, the results folder goes
    assert process.wait(timeout=30) == 0, log_path.read_text()


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the Python package playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _submit(page, url: str, photo: Path, driver: Path | None = None) -> None:
    page.goto(url)
    page.locator("#photos input[type=file]").set_input_files(str(photo))
    if driver is not None:
        page.locator("#driver input[type=file]").set_input_files(str(driver))
    page.locator("#driver video" if driver else "#photos img").first.wait_for()
    page.locator("#run").click()


def _error_shown(page, text: str) -> None:
    toast = page.locator(".toast-body", has_text=text).first
    toast.wait_for(timeout=60_000)
    message = toast.inner_text()
    assert "Traceback" not in message and "/tmp/" not in message
    assert "Traceback" not in page.locator("body").inner_text()


def test_page_makes_a_playable_synthetic_video_and_shows_bad_input(
    browser, server, media, tmp_path
):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))

    # A photo and a short driver give a video the browser plays, labelled synthetic.
    _submit(page, server, assets.astronaut_path(), media["driver"])
    player = page.locator("#result video")
    player.wait_for(timeout=120_000)
    page.wait_for_function(
        "() => { const v = document.querySelector('#result video');"
        " return v && v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=30_000,
    )
    assert "SYNTHETIC VIDEO" in page.locator("#summary").inner_text()
    assert "SYNTHETIC" in page.locator("#result").inner_text()
    source = urllib.parse.urljoin(server, player.get_attribute("src"))
    assert Path(urllib.parse.urlparse(source).path).name.startswith("synthetic-talkinghead-")
    downloaded = tmp_path / "result.mp4"
    downloaded.write_bytes(urllib.request.urlopen(source).read())
    assert video.probe(downloaded).width == 64
    assert len(list(video.read_frames(downloaded))) == SHORT_FRAMES

    # "Check a file" reads the result's marks back (signed manifest, tags) and refuses junk.
    page.locator("#check-file input[type=file]").set_input_files(str(downloaded))
    page.locator("#check").click()
    report = page.locator("#check-report textarea")
    page.wait_for_function(
        "() => document.querySelector('#check-report textarea').value.includes('MARKED')",
        timeout=60_000,
    )
    assert "signature valid" in report.input_value()
    page.goto(server)
    page.locator("#check-file input[type=file]").set_input_files(str(media["broken"]))
    page.locator("#check").click()
    _error_shown(page, "broken.mp4: not a video or image file")

    # Bad input: a one-line message naming the file, no stack trace, no server paths.
    _submit(page, server, media["blank"], media["driver"])
    _error_shown(page, "blank.png: no face found")
    _submit(page, server, assets.astronaut_path(), media["broken"])
    _error_shown(page, "broken.mp4: not a readable video")
    # The bundled example (the astronaut, the 4 s sample clip) fills both inputs; the server's
    # 2 s limit turns the clip away.
    page.goto(server)
    page.locator("#example tr.tr-body").click()
    page.locator("#driver video").first.wait_for()
    page.locator("#photos img").first.wait_for()
    page.locator("#run").click()
    _error_shown(page, "carphone_pristine.mp4: the driving video is longer than the limit of 2 s")
    page.goto(server)
    page.locator("#photos input[type=file]").set_input_files(str(media["huge"]))
    page.get_by_text("exceed the maximum allowed size of 1.0 Mb").first.wait_for(timeout=30_000)

    # Nothing was fetched from anywhere but this server.
    elsewhere = [u for u in requests if not u.startswith((server, "blob:", "data:"))]
    assert len(requests) > len(elsewhere) and not elsewhere
    page.close()
