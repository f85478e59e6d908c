"""The web demo: its runner on real media, then the page in a real browser (headless Debian
Chromium driven by Playwright, against `talkinghead web` started here), and its API called by
gradio_client as the page's API view documents it."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import re
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
from talkinghead.inference import jobs
from talkinghead.inference.render import AnimateOptions
from talkinghead.models import build_models
from talkinghead.provenance import verify_file
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
        finetune_steps="0",
        progress=lambda *args, desc="": stages.append(desc),
    )
    assert result.video.name.startswith("synthetic-") and result.video.suffix == ".mp4"
    assert result.summary.startswith(SYNTHETIC_NOTICE)
    assert f"{SHORT_FRAMES} frames at 25.00 fps, feed-forward" in result.summary
    assert stages == ["finding the face in the photos", "rendering frames"]
    assert len(list(video.read_frames(result.video))) == SHORT_FRAMES
    # The next run clears the previous results (Gradio keeps its own copies).
    again = runner.run([assets.astronaut_path()], media["driver"], finetune_steps=0)
    assert not result.video.exists() and again.video.exists()
    assert not result.person_file.exists() and again.person_file.exists()


def test_runner_reuses_the_person_and_takes_a_person_file(runner, media, monkeypatch, tmp_path):
    made = []
    monkeypatch.setattr(jobs, "personalize", _counting(jobs.personalize, made))
    photo = tmp_path / "me.png"
    shutil.copy(assets.astronaut_path(), photo)
    first = runner.run([photo], media["driver"], finetune_steps="2")
    assert "fine-tuned 2 steps" in first.summary and len(made) == 1
    # A second click with the same photos and settings: the same person, no fine-tuning.
    again = runner.run([photo], media["driver"], finetune_steps="2")
    assert "same person as an earlier run" in again.summary and len(made) == 1
    kept = tmp_path / "me.safetensors"  # the person file offered for download
    shutil.copy(again.person_file, kept)
    runner.run([photo], media["driver"], finetune_steps="1")  # other settings: a new person
    assert len(made) == 2
    # The person file uploaded again instead of the photos.
    loaded = runner.run([], media["driver"], finetune_steps="2", person_file=kept)
    assert "person from the uploaded file" in loaded.summary and len(made) == 2
    assert loaded.person_file is None
    with pytest.raises(UserError, match="auto or a number"):
        runner.run([photo], media["driver"], finetune_steps="many")
    with pytest.raises(UserError, match="at most 300 fine-tuning steps"):
        runner.run([photo], media["driver"], finetune_steps="1000")


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize(
    ("photos", "driver", "message"),
    [
        ([], "driver", "give 1 to 8 photos of the person, or a person file"),
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


@contextlib.contextmanager
def _serving(command: list[str], log_path: Path):
    """A web server started by ``command`` (port last); yields (url, process). Its log is shown
    if it fails to start or to stop cleanly."""
    port = _free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([*command, str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300  # a loaded machine: imports alone can take a minute
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the web server did not start:\n{log_path.read_text()}")
            time.sleep(0.5)
    yield url, process
    process.terminate()  # SIGTERM: Gradio closes, the results folder goes
    assert process.wait(timeout=30) == 0, log_path.read_text()


# The server's queue: one run at a time, QUEUE_SIZE waiting, the rest told the queue is full.
QUEUE_SIZE = 2


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    """`talkinghead web` on a free local port (feed-forward by default, to keep runs short)."""
    command = [sys.executable, "-m", "talkinghead.cli", "web", "--model", str(media["bundle"])]
    command += ["--max-upload-mb", "1", "--max-video-seconds", "2", "--finetune-steps", "0"]
    command += ["--queue-size", str(QUEUE_SIZE)]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with _serving([*command, "--port"], log_path) as (url, process):
        yield url
        assert process.poll() is None, f"the server stopped:\n{log_path.read_text()}"


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
    page.locator("#driver video" if driver else "#photos-preview img").first.wait_for()
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
    # The person made for it, offered as a file to upload next time.
    offered = page.locator("#person-download").inner_text().replace("\n", "")
    assert re.search(r"person-\w+\.safetensors", offered), offered
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
    page.locator("#photos-preview img").first.wait_for()
    page.locator("#run").click()
    _error_shown(page, "carphone_pristine.mp4: the driving video is longer than the limit of 2 s")
    page.goto(server)
    page.locator("#photos input[type=file]").set_input_files(str(media["huge"]))
    page.get_by_text("exceed the maximum allowed size of 1.0 Mb").first.wait_for(timeout=30_000)

    # Nothing was fetched from anywhere but this server.
    elsewhere = [u for u in requests if not u.startswith((server, "blob:", "data:"))]
    assert len(requests) > len(elsewhere) and not elsewhere
    page.close()


NUM_CALLS = 10


@pytest.mark.slow  # 45-60 s on a busy 2-core machine: four runs, three watermark searches
def test_gradio_client_calls_run_one_at_a_time_and_the_overflow_is_told_busy(server, media):
    """10 calls at once, as the page's API view documents them: one runs, QUEUE_SIZE wait,
    the rest get a one-line busy answer, each accepted call gets a marked video."""
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    # A generous HTTP timeout: on a loaded machine the server answers uploads slowly.
    client = Client(server, verbose=False, httpx_kwargs={"timeout": 120})
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = [p["parameter_name"] for p in endpoint["/animate"]["parameters"]]
    assert names[:3] == ["photos", "person_file", "driver"]

    def call(_):
        try:
            return client.predict(
                [handle_file(str(assets.astronaut_path()))],
                None,
                handle_file(str(media["driver"])),
                "relative",
                "0",
                False,
                False,
                api_name="/animate",
            )
        except QueueError as exc:
            return str(exc)

    # The calls reach the server within a small fraction of one run (tens of ms vs seconds).
    with concurrent.futures.ThreadPoolExecutor(NUM_CALLS) as pool:
        outcomes = list(pool.map(call, range(NUM_CALLS)))
    done = [o for o in outcomes if isinstance(o, tuple)]
    busy = [o for o in outcomes if isinstance(o, str)]
    assert 1 <= len(done) <= 1 + QUEUE_SIZE and len(done) + len(busy) == NUM_CALLS
    assert all("\n" not in message and "full" in message for message in busy), busy
    for video_path, person_path, summary in done:
        assert summary.startswith(SYNTHETIC_NOTICE)
        assert verify_file(video_path).marked and Path(person_path).suffix == ".safetensors"

    # Still up: bad input is a one-line error, then a good call runs.
    photos = [handle_file(str(assets.astronaut_path()))]
    with pytest.raises(AppError, match="give a driving video"):
        client.predict(photos, None, None, "relative", "0", False, False, api_name="/animate")
    driver = handle_file(str(media["driver"]))
    video_path, _, _ = client.predict(
        photos, None, driver, "relative", "0", False, False, api_name="/animate"
    )
    assert verify_file(video_path).marked
