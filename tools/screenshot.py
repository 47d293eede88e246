"""Screenshot the built docs site in headless Chromium: the home page, reference and CLI page.

`make screenshot` builds the site, then runs this. It serves `site/` on 127.0.0.1 on a free
port, for as long as the screenshots take, and writes the top 2,000 pixels of each page of
`PAGES` to `build/screenshots/{name}.png` (`home.png`, `reference.png`, `cli.png`). It needs
`chromium` (`apt-get install -y chromium`); the test suite does not.

    python tools/screenshot.py [SITE_DIR] [OUT_DIR]
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PAGES = {"home": "", "reference": "reference/", "cli": "cli/"}
"""Each screenshot's name and its path under the site."""

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    raise SystemExit("no Chromium found: apt-get install -y chromium")


def screenshot(browser: str, url: str, out: Path) -> None:
    """One full-window PNG of `url`, in a fresh profile that talks to nothing but `url`."""
    with tempfile.TemporaryDirectory(prefix="meigen-chromium-") as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={out}",
                "--window-size=1280,2000",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str]) -> int:
    """Serve the site, screenshot each of `PAGES`, stop serving."""
    site = Path(argv[0] if argv else "site").resolve()
    out_dir = Path(argv[1] if len(argv) > 1 else "build/screenshots").resolve()
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site} holds no built site: run mkdocs build first")
    out_dir.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for name, path in PAGES.items():
            out = out_dir / f"{name}.png"
            screenshot(browser, f"http://127.0.0.1:{port}/{path}", out)
            print(f"wrote {out}")
    finally:
        server.shutdown()
        server.server_close()
    return 0


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging each request."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
