"""Open an HTML file in headless Chromium as a person would: the DOM after scripts ran, and a screenshot.

Used by the tests to check that reports render offline (plotly's SVG nodes present, screenshot not blank). Needs
Debian's ``chromium`` package (``.ci/run`` installs it); :func:`find_chromium` says where it is.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["find_chromium", "render", "Rendered"]

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
          "--no-first-run", "--disable-extensions", "--mute-audio")


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(frozen=True)
class Rendered:
    """What a headless browser made of a page."""

    dom: str
    """The serialised DOM after the page's scripts ran."""
    screenshot: Path
    """A PNG of the first screen."""

    def plotly_figures(self) -> int:
        """Number of rendered plotly figures (each draws one ``main-svg`` root)."""
        return self.dom.count('class="main-svg"') // 2 if 'class="main-svg"' in self.dom else 0

    def ink_fraction(self) -> float:
        """Fraction of screenshot pixels that are not (near-)white: 0 for a blank page."""
        from PIL import Image

        with Image.open(self.screenshot) as img:
            gray = img.convert("L")
            hist = gray.histogram()
        return 1.0 - sum(hist[245:]) / max(1, sum(hist))


def render(path: str | Path, *, width: int = 1280, height: int = 2000, budget_ms: int = 15000,
           out_dir: str | Path | None = None, timeout: float = 120.0) -> Rendered:
    """Render ``path`` offline in headless Chromium; returns the DOM and a screenshot."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found: install Debian's `chromium` package (apt-get install chromium)")
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a file")
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="render-"))
    out.mkdir(parents=True, exist_ok=True)
    png = out / (path.stem + ".png")
    common = [browser, *_FLAGS, f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
              f"--user-data-dir={out / 'profile'}"]
    url = path.as_uri()
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=timeout, check=True)
    subprocess.run([*common, f"--screenshot={png}", url], capture_output=True, timeout=timeout, check=True)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot for {path}")
    return Rendered(dom.stdout, png)
