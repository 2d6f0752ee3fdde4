"""A real screenshot of the report page (headless Chromium) shows the plots.

GVISOR_FLEET_UPDATE_SCREENSHOT=1 also writes it to components/report/screenshot.png
(the one README.md shows).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from components.report.figures import load_reports
from components.report.plots import RUNC_COLOUR, RUNSC_COLOURS
from components.report.render import html_page
from tests.unit.recorded_report import stack_output

README_SHOT = Path(__file__).parents[2] / "components" / "report" / "screenshot.png"
WIDTH, HEIGHT = 1300, 2600


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("needs a headless Chromium (Debian package chromium; tests/setup.sh installs it)")


def screenshot(page: str, tmp_path: Path) -> Image.Image:
    html = tmp_path / "report.html"
    html.write_text(page)
    png = tmp_path / "report.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
         f"--screenshot={png}", html.as_uri()],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    return Image.open(png).convert("RGB")


def pixels_near(image: Image.Image, colour: str, tolerance: int = 12) -> int:
    r0, g0, b0 = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        count
        for count, (r, g, b) in image.getcolors(maxcolors=WIDTH * HEIGHT) or []
        if abs(r - r0) <= tolerance and abs(g - g0) <= tolerance and abs(b - b0) <= tolerance
    )


def test_the_screenshot_shows_every_machines_plots(tmp_path: Path):
    reports = load_reports(stack_output())
    image = screenshot(html_page(reports), tmp_path)
    assert image.size == (WIDTH, HEIGHT)
    assert len(image.getcolors(maxcolors=WIDTH * HEIGHT) or []) > 50, "the page rendered blank"
    # Bars of both runtimes are on the page, in the charts' own colours, a fair area each.
    assert pixels_near(image, RUNC_COLOUR) > 2000 * len(reports)
    assert pixels_near(image, RUNSC_COLOURS["runsc/systrap"]) > 2000 * len(reports)
    if os.environ.get("GVISOR_FLEET_UPDATE_SCREENSHOT"):
        image.save(README_SHOT, optimize=True)


def test_the_check_fails_on_a_page_without_its_plots(tmp_path: Path):
    page = re.sub(r'<img [^>]*src="data:image/png;base64,[^"]*">', "", html_page(load_reports(stack_output())))
    image = screenshot(page, tmp_path)
    assert pixels_near(image, RUNC_COLOUR) < 200
    assert pixels_near(image, RUNSC_COLOURS["runsc/systrap"]) < 200
