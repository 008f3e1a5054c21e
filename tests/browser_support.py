"""What the browser tests share: Debian's Chromium driven through Playwright, launched and given a page one way.

Importing this module skips the importing test module when no Chromium is installed outside CI; in CI (`CI` set) a
missing browser is a failure, since .ci/run installs it.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots, for a failing run's review
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1400, "height": 1000}

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the browser tests: apt-get install chromium")
    pytest.skip("no Chromium found (apt-get install chromium); skipping browser tests", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@contextmanager
def launched_browser() -> Iterator:
    """A headless Chromium, closed afterwards."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def opened_page(url: str, *, screenshot: str, wait_for: Callable | None = None) -> Iterator:
    """A page of a fresh browser at `url`, once `wait_for(page)` returned; `page.dialogs` collects any dialog's
    message (an alert() would mean user text ran as code). Afterwards the whole page goes to ARTIFACTS/`screenshot`."""
    with launched_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        if wait_for is not None:
            wait_for(page)
        try:
            yield page
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
