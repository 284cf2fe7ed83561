"""report.html as a browser shows it: headless Chromium takes a screenshot that is not blank.

Skipped where no Chromium is installed (``apt-get install chromium`` to run it).
"""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from nopeek.eval.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="session")
def browser() -> str:
    """The first Chromium on PATH (skips before the sweep is run when there is none)."""
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)})")
    return found


def _screenshot(browser: str, page, shot, profile) -> None:
    """Render ``page`` headless into the PNG ``shot`` (own profile folder: no lock clashes)."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--window-size=1200,2400", f"--screenshot={shot}",
           page.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-500:]}"


def test_report_html_renders_in_a_browser(browser, tiny_sweep, tmp_path):
    sweep, _ = tiny_sweep
    write_report([sweep], tmp_path / "rep")
    shot = tmp_path / "shot.png"
    _screenshot(browser, tmp_path / "rep" / "report.html", shot, tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    assert pixels.var() > 0
    # text, tables and figures: a real share of the page is not background
    assert (pixels < 200).mean() > 0.01
