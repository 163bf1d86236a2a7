"""Headless Chromium for the report's tests: the system's browser driven by Playwright for Python.

Debian's ``chromium`` package is used (``.ci/run`` installs it); Playwright's own browser
download does not work offline. Tests that take the ``browser`` fixture skip, with the
reason, when either is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The Chromium binary, or None when none is installed.
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and Path(p).exists()), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole session."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A page with its console messages, errors, requests, dialogs and downloads recorded.

    Args:
        browser: the ``browser`` fixture.
        path: a file to open from ``file://``, or ``None`` with ``html`` to set the content.
    """

    def __init__(self, browser: Any, path: Path | None = None, width: int = 1200, html: str | None = None) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.downloads: list[Any] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("download", lambda d: self.downloads.append(d))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        if path is not None:
            self.url = path.resolve().as_uri()
            self.page.goto(self.url)
        else:
            self.url = "about:blank"
            self.page.set_content(html or "")
        self.page.wait_for_load_state("load")

    def js(self, code: str) -> Any:
        return self.page.evaluate(code)

    def broken_images(self) -> list[str]:
        """Images that are displayed (outside a closed, hidden part) but did not load.

        Waits (at most 15 s) for the displayed images still loading: a lazy image may finish
        after the page's load event.
        """
        shown = "[...document.images].filter(i => !i.closest('[hidden]') && !i.hidden)"
        try:
            self.page.wait_for_function(f"{shown}.every(i => i.complete)", timeout=15000)
        except Exception:  # noqa: BLE001 (what is still not loaded is reported below)
            pass
        return self.js(f"""{shown}
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))""")

    def close(self) -> None:
        self.page.close()
