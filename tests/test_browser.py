"""The app in a real browser: ``streamlit run app.py`` on a smoke store, every page visited with Chromium.

Screenshots go to ``$MTLX_SCREENSHOTS`` (default: the test's temporary folder). Skipped only when Debian's
Chromium (/usr/bin/chromium) or the playwright package is absent.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _app_store import smoke_store_path
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: page -> (URL path, title)
PAGES = {"overview": ("", "Faithfulness of explanations under pruning"),
         "compare": ("compare", "Compare explanations across sparsity"), "layers": ("layers", "Faithfulness by layer"),
         "irof_steps": ("irof_steps", "Perturbation steps"), "models": ("models", "Models"),
         "live": ("live", "Live: explain your own image")}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's Chromium is not installed at /usr/bin/chromium "
                                                       "(apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "MTLX_STORE": str(smoke_store_path())}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, log.read_text()
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{port}", log
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server: Any) -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 2400})
        finally:
            browser.close()


def settle(page: Any, timeout_s: float = 240) -> None:
    """Wait until the app has finished running (no running indicator, stable for a moment)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    deadline, quiet = time.time() + timeout_s, 0
    while time.time() < deadline and quiet < 4:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        quiet = 0 if running else quiet + 1
        time.sleep(0.5)


def assert_no_errors(page: Any, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{where}: {exceptions.first.inner_text()}"
    errors = [a.inner_text() for a in page.locator('[data-testid="stAlertContentError"]').all()]
    assert not errors, f"{where}: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("MTLX_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_in_chromium_without_errors(server: Any, page: Any, shots: Path, name: str) -> None:
    url, _ = server
    path, title = PAGES[name]
    page.goto(f"{url}/{path}")
    settle(page)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert_no_errors(page, name)
    assert page.locator('[data-testid="stHeading"]').first.inner_text().strip() == title
    if name in ("overview", "compare", "layers", "irof_steps"):  # every faithfulness view has a metric selector
        assert page.get_by_text("Faithfulness metric").count() > 0
    if name in ("overview", "compare", "irof_steps"):  # figures of faithfulness scores or curves
        assert page.locator('[data-testid="stPlotlyChart"]').count() >= 2


def test_live_page_explains_an_uploaded_image(server: Any, page: Any, shots: Path, tmp_path: Path) -> None:
    url, _ = server
    y, x = np.mgrid[0:480, 0:640]
    photo = np.stack([x / 640, y / 480, 0.5 + 0.5 * np.sin(x / 40.0) * np.cos(y / 30.0)], axis=-1)
    path = tmp_path / "upload.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(path)
    page.goto(f"{url}/live")
    settle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    settle(page)
    page.get_by_text("Grad-CAM took").wait_for(timeout=120_000)
    page.screenshot(path=str(shots / "live_upload.png"))
    assert_no_errors(page, "live upload")
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 3  # maps and predictions
    buf = io.BytesIO()
    Image.open(shots / "live_upload.png").save(buf, format="PNG")
    assert buf.tell() > 10_000  # a real, non-blank screenshot
