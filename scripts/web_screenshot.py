"""Screenshot of the web demo after one run, for the README (needs chromium + playwright).

.venv/bin/python scripts/web_screenshot.py [--model M] [--out docs/web-demo.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

from talkinghead import assets

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
            page.locator("input[type=file]").nth(0).set_input_files(str(assets.astronaut_path()))
            page.get_by_label("use the sample clip as the driver").check()
            page.get_by_label("side by side (driver | landmarks | result)").check()
            page.locator("#run").click()
            page.locator("#result video").wait_for(timeout=600_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.terminate()
    print(f"screenshot -> {args.out}")


if __name__ == "__main__":
    main()
