"""The web demo in a real browser: headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from talkinghead import assets, video
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.models import build_models

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, clip_frames):
    folder = tmp_path_factory.mktemp("web")
    preset = presets.load("tiny")
    torch.manual_seed(0)
    bundle = folder / "tiny.safetensors"
    save_weights(bundle, dict(build_models(preset.model)._asdict()), preset, half=True)
    driver = folder / "driver.mp4"
    with video.VideoWriter(driver, 25) as writer:
        for frame in clip_frames[:20]:
            writer.write(frame)
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(folder / "blank.png")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "talkinghead.cli",
            "web",
            "--port",
            str(port),
            "--model",
            str(bundle),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"server did not start: {process.stdout.read()}")
    yield url, folder, driver
    process.terminate()
    process.wait(timeout=30)


def _run(page, photo: Path, driver: Path) -> None:
    inputs = page.locator("input[type=file]")
    inputs.nth(0).set_input_files(str(photo))
    inputs.nth(1).set_input_files(str(driver))
    page.wait_for_timeout(1500)  # uploads finish
    page.locator("#run").click()


def test_page_makes_a_playable_synthetic_video_and_reports_bad_input(server, tmp_path):
    url, folder, driver = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        _run(page, assets.astronaut_path(), driver)
        player = page.locator("#result video")
        player.wait_for(timeout=120_000)
        source = player.get_attribute("src")
        assert "SYNTHETIC VIDEO" in page.locator("#label").inner_text()
        downloaded = tmp_path / "result.mp4"
        downloaded.write_bytes(urllib.request.urlopen(urllib.parse.urljoin(url, source)).read())
        info = video.probe(downloaded)
        assert len(list(video.read_frames(downloaded))) == 20 and info.width == 64
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        page.goto(url)
        _run(page, folder / "blank.png", driver)
        message = page.get_by_text("no face found")
        message.first.wait_for(timeout=60_000)
        assert "Traceback" not in page.content()
        browser.close()
