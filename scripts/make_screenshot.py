"""Regenerate docs/demo.png from the current demo page, as someone who installed the package
sees it: ``visiontales serve --tiny`` started in a fresh temporary folder (not the repository),
a sample sequence picked in Chromium, the story told (run after changing the page).

    python scripts/make_screenshot.py             # trains the tiny recipe first: 1-3 minutes on 2 CPU cores
    python scripts/make_screenshot.py --out /tmp/page.png --sample 3

Needs the ``[demo]`` extra, playwright (both in ``[test]``) and a Chromium on the PATH
(Debian: ``apt-get install chromium``); no browser is downloaded. tests/test_demo.py drives the
page with the same two functions, :func:`demo_server` and :func:`tell_a_sample`.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SERVER_LOG = "server.log"
PAGE_SOURCE = REPO / "visiontales" / "app" / "page.py"
STAMP = "visiontales-page-sha256"  # a PNG text chunk: the page.py the picture was taken of


def page_digest() -> str:
    """SHA-256 of visiontales/app/page.py: stamped into the picture, so a test can tell when
    the page changed after the picture was taken."""
    return hashlib.sha256(PAGE_SOURCE.read_bytes()).hexdigest()


def stamp(picture: str | Path) -> None:
    """Write :func:`page_digest` into the PNG's text chunk :data:`STAMP`."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text(STAMP, page_digest())
    with Image.open(picture) as image:
        image.load()
    image.save(picture, pnginfo=info, optimize=True)


@contextmanager
def demo_server(*serve_args: str, cwd: str | Path, timeout: float = 900) -> Iterator[str]:
    """``python -m visiontales serve *serve_args`` run in ``cwd``; yields the page's URL once it
    answers, and stops the server afterwards. Its output goes to ``cwd/server.log``."""
    from visiontales.app.page import free_port
    port = free_port()
    log_path = Path(cwd) / SERVER_LOG
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "visiontales", "serve", "--port", str(port),
                                   *serve_args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + timeout
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server stopped (exit {server.returncode}):\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no page at {url} after {timeout} s:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def tell_a_sample(url: str, chromium: str, sample: int = 0, screenshot: str | Path | None = None,
                  timeout_ms: int = 120_000) -> dict[str, object]:
    """Open the page in Chromium, pick sample sequence ``sample`` (0-based), press *Tell the
    story* and read the page back: ``{"photos": images shown and decoded, "story": the story
    box, "status": the status line (the object check)}``. ``screenshot`` saves the whole page."""
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.locator("#sample-picker input").click()
            page.locator("#sample-picker [role=option]").nth(sample).click()
            images = page.locator("#photos img")
            expect(page.locator("#status")).to_contain_text("Sample loaded", timeout=30_000)
            expect(images).not_to_have_count(0, timeout=30_000)
            page.wait_for_function("() => [...document.querySelectorAll('#photos img')]"
                                   ".every(img => img.complete)", timeout=30_000)
            decoded = images.evaluate_all("imgs => imgs.filter(img => img.naturalWidth > 0).length")
            page.locator("#tell").click()
            story = page.locator("#story textarea")
            expect(story).not_to_have_value("", timeout=timeout_ms)
            expect(page.locator("#status")).to_contain_text("Object check", timeout=timeout_ms)
            page.wait_for_timeout(500)  # let the table paint before the picture
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return {"photos": decoded, "story": story.input_value(),
                    "status": page.locator("#status").inner_text().strip()}
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "demo.png"), help="the picture (default: docs/demo.png)")
    parser.add_argument("--sample", type=int, default=0, help="which sample sequence to pick (0-based)")
    parser.add_argument("--model", metavar="DIR", help="serve this model instead of training the tiny recipe")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        parser.error("no Chromium on the PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="visiontales-screenshot-") as folder:
        with demo_server(*(["--model", args.model] if args.model else ["--tiny"]), cwd=folder) as url:
            seen = tell_a_sample(url, chromium, sample=args.sample, screenshot=args.out)
    stamp(args.out)
    print(f"{args.out}: {seen['photos']} photos; story: {seen['story']}\n{seen['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
