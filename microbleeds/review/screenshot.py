"""Screenshots of a report page in Debian's headless chromium, through Playwright.

The browser is never downloaded (``playwright install`` is not needed) and may load only
``file:``, ``data:`` and ``blob:`` URLs. Sizes are CSS pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
LOCAL_URLS = ("file:", "data:", "blob:")


def screenshot(html_path, png_path, width=1400, height=1000, full_page=False,
               chromium=CHROMIUM, actions=None) -> Path:
    """Save a PNG screenshot of a report page; return its path.

    ``actions`` is an optional list of keys to press before the shot (e.g. ``["j", "c"]`` to show
    a decided card; the page scrolls to the current card).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError(html_path, "screenshots need the Python package 'playwright' "
                                    "(pip install playwright; no browser download needed)") from None
    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    if not html_path.is_file():
        raise InputError(html_path, "report does not exist")
    if not os.path.exists(chromium):
        raise InputError(chromium, "chromium not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": int(width), "height": int(height)})
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith(LOCAL_URLS) else route.abort())
            page.goto(html_path.as_uri())
            for key in actions or []:
                page.keyboard.press(key)
            page.screenshot(path=str(png_path), full_page=bool(full_page))
        finally:
            browser.close()
    return png_path
