"""Screenshot of the web demo after one run, for the README (needs chromium + playwright).

.venv/bin/python scripts/web_screenshot.py [--model M] [--out docs/web-demo.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request

from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--out", default="docs/web-demo.png")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args()
    command = [sys.executable, "-m", "talkinghead.cli", "web", "--port", str(args.port)]
    server = subprocess.Popen(command + (["--model", args.model] if args.model else []))
    url = f"http://127.0.0.1:{args.port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.goto(url)
            page.locator("#example tr.tr-body").click()  # astronaut + sample clip
            page.locator("#driver video").first.wait_for()
            page.get_by_label("side by side: driver | landmarks | result").check()
            page.locator("#run").click()
            page.wait_for_function(
                "() => { const v = document.querySelector('#result video');"
                " return v && v.readyState >= 2; }",
                timeout=600_000,
            )
            page.evaluate(
                "() => { const v = document.querySelector('#result video');"
                " v.pause(); v.currentTime = 2.0; }"
            )
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out, full_page=True)
            # A 256-colour palette keeps the PNG small for the repository (~140 KB).
            image = Image.open(args.out).convert("RGB")
            image.quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
            browser.close()
    finally:
        server.terminate()
    print(f"screenshot -> {args.out}")


if __name__ == "__main__":
    main()
