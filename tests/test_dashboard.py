"""The dashboard as a person uses it: a real ``ctr serve`` with three shadow variants, trained
over HTTP, and ``/dashboard`` opened in Debian's headless Chromium driven by playwright.

The figures the page shows must equal ``/v1/model`` and ``/v1/variants``, move when more
events are learned, fit a phone's width, and say plainly when the API key is refused.
Screenshots go to ``$CTR_SCREENSHOT_DIR`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import ServerProcess, start_server
from service_helpers import some_events

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VARIANTS = "rda:lambda=1e-4,fobos:lambda=1e-4,ftrl:alpha=0.1;l1=5;name=ftrl-strong-l1"
CHARTS = ("nnz", "l1", "logloss", "auc", "events", "latency", "hist", "calibration")
KEY = "dashboard-test-key"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - CI installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None,
                       reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="/usr/bin/chromium is missing (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    s = start_server(workdir / "open", "--alpha", "0.2", "--variants", VARIANTS,
                     "--stats-every", "0.5")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed_server(workdir: Path) -> Iterator[ServerProcess]:
    s = start_server(workdir / "keyed", "--variants", "ftrl:l1=5", "--stats-every", "0.5",
                     env={"CTR_API_KEYS": KEY})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CTR_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train(url: str, n: int, seed: int, headers: dict[str, str] | None = None) -> None:
    events = some_events(n, seed=seed)
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        for i in range(0, n, 500):
            r = c.post("/v1/train", json={"events": events[i:i + 500]})
            assert r.status_code == 200, r.text
        # a few predictions, for the latency chart
        for i in range(0, 200, 20):
            assert c.post("/v1/predict", json={"events": events[i:i + 20]}).status_code == 200


def api(url: str, path: str, headers: dict[str, str] | None = None) -> Any:
    r = httpx.get(url + path, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def open_dashboard(browser: Browser, url: str, width: int = 1280, height: int = 1000) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url + "/dashboard")
    return page


def wait_for_version(page: Page, version: int, timeout: float = 30) -> None:
    page.wait_for_function(
        "v => document.querySelector('[data-testid=model-version]')"
        "?.getAttribute('data-value') === String(v)", arg=version, timeout=timeout * 1000)


def shown(page: Page, testid: str) -> str | None:
    return page.get_by_test_id(testid).get_attribute("data-value")


def check_numbers_match(page: Page, url: str) -> list[dict[str, Any]]:
    variants = api(url, "/v1/variants")
    model = api(url, "/v1/model")
    rows = variants["variants"]
    assert [v["primary"] for v in rows] == [True] + [False] * (len(rows) - 1)
    assert int(shown(page, "model-version") or -1) == variants["model_version"]
    for i, v in enumerate(rows):
        assert shown(page, f"m-{i}-name") == v["name"]
        for key in ("rows", "nnz", "coordinates"):
            assert int(shown(page, f"m-{i}-{key}") or -1) == v[key], (v["name"], key)
        for key in ("l1_norm", "logloss", "auc", "calibration"):
            assert float(shown(page, f"m-{i}-{key}") or "nan") == v[key], (v["name"], key)
        # the text shows the same number, rounded for reading
        assert page.get_by_test_id(f"m-{i}-nnz").inner_text() == f"{v['nnz']:,}"
    primary = rows[0]
    for key in ("rows", "nnz", "coordinates", "l1_norm", "logloss", "auc"):
        assert model[key] == primary[key], key
    return rows


def test_dashboard_shows_what_the_api_says_and_moves(browser: Browser, server: ServerProcess,
                                                     shots: Path) -> None:
    train(server.url, 3000, seed=11)
    page = open_dashboard(browser, server.url)
    wait_for_version(page, 3000)
    for chart in CHARTS:  # uPlot draws into a canvas in each chart's box
        page.wait_for_selector(f"[data-testid=chart-{chart}] canvas", timeout=10_000)
    assert page.get_by_test_id("summary").locator("tbody tr").count() == 4
    assert page.get_by_test_id("scatter").locator("circle").count() == 4
    assert page.get_by_test_id("fields").locator("tbody tr").count() >= 39
    assert page.get_by_test_id("auth-message").is_hidden()
    before = check_numbers_match(page, server.url)

    train(server.url, 2000, seed=12)
    wait_for_version(page, 5000)
    after = check_numbers_match(page, server.url)
    for b, a in zip(before, after, strict=True):
        assert a["rows"] == b["rows"] + 2000
        assert (a["nnz"], a["l1_norm"]) != (b["nnz"], b["l1_norm"])
    # the history grew: more than one point per series, and the service figures are live
    assert page.evaluate("state.hist.t.length") >= 2
    assert float(shown(page, "events-per-s") or -1) >= 0
    page.get_by_test_id("model-select").select_option(index=3)
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    assert not page.errors  # type: ignore[attr-defined]
    page.close()


def test_dashboard_fits_a_phone(browser: Browser, server: ServerProcess, shots: Path) -> None:
    version = api(server.url, "/v1/variants")["model_version"]
    if version == 0:
        train(server.url, 1000, seed=13)
        version = 1000
    page = open_dashboard(browser, server.url, 390, 844)
    wait_for_version(page, version)
    page.wait_for_selector("[data-testid=chart-calibration] canvas")
    page.wait_for_timeout(300)  # let the resize observers settle
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    for chart in ("nnz", "hist"):
        box = page.get_by_test_id(f"chart-{chart}").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)
    assert not page.errors  # type: ignore[attr-defined]
    page.close()


def test_dashboard_says_when_the_key_is_refused(browser: Browser, keyed_server: ServerProcess,
                                               shots: Path) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    train(keyed_server.url, 1000, seed=14, headers=auth)
    page = open_dashboard(browser, keyed_server.url)
    message = page.get_by_test_id("auth-message")
    message.wait_for(state="visible", timeout=20_000)
    assert "401" in message.inner_text() and "API key" in message.inner_text()

    page.get_by_test_id("api-key").fill("not-the-key")
    page.get_by_test_id("save-key").click()
    page.wait_for_function("document.querySelector('[data-testid=auth-message]')"
                           ".textContent.includes('403')", timeout=10_000)
    page.screenshot(path=str(shots / "dashboard-refused.png"))

    page.get_by_test_id("api-key").fill(KEY)
    page.get_by_test_id("save-key").click()
    wait_for_version(page, 1000)
    assert message.is_hidden()
    deadline = time.monotonic() + 10
    while shown(page, "m-1-nnz") is None and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert int(shown(page, "m-1-nnz") or -1) == \
        api(keyed_server.url, "/v1/variants", auth)["variants"][1]["nnz"]
    # the key is kept for the next visit
    assert page.evaluate("localStorage.getItem('ctr-dashboard-api-key')") == KEY
    page.close()
