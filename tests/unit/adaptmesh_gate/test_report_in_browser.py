"""The gate's HTML report in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver (named explicitly, so Selenium Manager downloads nothing).

It renders a realistic report to a file, opens it, saves a full-page screenshot under the
test's tmp dir and checks the rendered DOM: both heatmaps laid out with N x N visible cells
whose computed background colours follow the counts, one row per check and per label, the
too-small warning on screen, no script and nothing fetched. A missing browser fails the test
(a green run that never rendered would prove nothing); `make browser` installs it.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from adaptmesh_gate.report_html import render_report
from tests.unit.adaptmesh_gate.test_report_html import HOSTILE, LABELS, realistic_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH = 1280
# No network here besides package registries: without these Chromium keeps trying to reach
# Google's services (and floods the log with refused connections).
QUIET_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"headless Chromium is needed to check the gate's HTML report: {', '.join(missing)} "
            "missing; `make browser` installs it (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in QUIET_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WIDTH},1000")
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def png_pixels(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), "not an 8-bit non-interlaced PNG"
    assert colour in (2, 6), "not an RGB or RGBA PNG"
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    assert len(raw) == height * (stride + 1), "truncated image data"
    previous = bytearray(stride)
    rows: list[list[tuple[int, int, int]]] = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + best) & 0xFF
        rows.append([(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, channels)])
        previous = line
    return width, height, rows


def rgb(css_colour: str) -> tuple[int, int, int]:
    """`rgb(1, 2, 3)` / `rgba(1, 2, 3, 1)` as a tuple."""
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return red, green, blue


def visible(element: WebElement) -> bool:
    rect = element.rect
    return element.is_displayed() and rect["width"] > 0 and rect["height"] > 0


def test_the_report_renders_with_heatmaps_and_tables_in_headless_chromium(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    report = realistic_report(extra_label=HOSTILE)
    labels = (*LABELS, HOSTILE)
    page = tmp_path / "gate-report.html"
    page.write_text(render_report(report), encoding="utf-8")
    browser.get(page.as_uri())

    assert browser.title == f"Gate report: fin-news {report.candidate.model_version} rejected"
    # Self-contained and inert: nothing fetched, no script element, no alert from a label.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.find_elements(By.TAG_NAME, "script") == []
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text

    # The full page as people see it.
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics["cssContentSize"]
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": content["width"],
                "height": content["height"],
                "scale": 1,
            },
        },
    )
    screenshot = tmp_path / "gate-report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000, f"screenshot only {width} px wide"
    assert height >= 1500, f"screenshot only {height} px tall: the page did not lay out"
    assert len(data) > 50_000, "a page this full does not compress to so few bytes"

    decision = browser.find_element(By.ID, "decision")
    assert visible(decision)
    assert "REJECTED" in decision.text  # the badge is upper-cased by CSS
    assert browser.find_element(By.ID, "too-small").is_displayed()

    for role, evaluation in (("champion", report.champion), ("candidate", report.candidate)):
        assert evaluation is not None
        table = browser.find_element(By.ID, f"heatmap-{role}")
        assert "heatmap" in (table.get_attribute("class") or "").split()
        assert visible(table)
        cells = table.find_elements(By.CSS_SELECTOR, "td.cell")
        assert len(cells) == len(labels) ** 2
        assert all(visible(cell) for cell in cells)
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [row.find_element(By.TAG_NAME, "th").get_attribute("title") for row in rows] == [
            *labels
        ]
        for cell in cells:
            true_label = cell.get_attribute("data-true") or ""
            predicted = cell.get_attribute("data-predicted") or ""
            expected = evaluation.confusion.get(true_label, {}).get(predicted, 0)
            assert cell.get_attribute("data-count") == str(expected)
        by_count = sorted(cells, key=lambda cell: float(cell.get_attribute("data-share") or 0))
        low, high = by_count[0], by_count[-1]
        low_colour = rgb(low.value_of_css_property("background-color"))
        high_colour = rgb(high.value_of_css_property("background-color"))
        assert low_colour != high_colour
        assert sum(high_colour) < sum(low_colour) - 300, "a full row share should be dark"
        # The heatmap as pixels: pale and dark cells are both on screen.
        image = tmp_path / f"heatmap-{role}.png"
        image.write_bytes(table.screenshot_as_png)
        image_width, image_height, pixels = png_pixels(image.read_bytes())
        assert image_width > 100
        assert image_height > 100
        colours = {pixel for row in pixels for pixel in row}
        assert any(sum(c) < 250 and c[2] > c[0] for c in colours), "no dark blue cell drawn"
        assert any(sum(c) > 740 for c in colours), "no pale cell drawn"

    checks = browser.find_elements(By.CSS_SELECTOR, "#checks tbody tr")
    assert len(checks) == len(report.checks)
    for row, check in zip(checks, report.checks, strict=True):
        assert visible(row)
        assert check.reason in row.text
        assert ("FAILED" in row.text) is (not check.passed)

    label_rows = browser.find_elements(By.CSS_SELECTOR, "#per-label tbody tr")
    assert [row.find_element(By.TAG_NAME, "th").text for row in label_rows] == list(labels)
    trade = next(row for row in label_rows if row.get_attribute("data-label") == "trade")
    assert "worse" in (trade.get_attribute("class") or "")
    assert rgb(trade.find_element(By.CSS_SELECTOR, "td.diff").value_of_css_property("color")) == (
        207,
        34,
        46,
    )

    for table_id, count in (
        ("slices", len(report.slices)),
        ("must-pass", len(report.candidate.must_pass)),
    ):
        assert len(browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")) == count
    lineage = browser.find_element(By.ID, "lineage")
    assert visible(lineage)
    assert "corr-ds-0012" in lineage.text
    assert "corr-ds-0009" in lineage.text
