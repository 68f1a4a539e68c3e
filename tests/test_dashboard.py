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
    in_use = len(api(server.url, "/v1/model")["fields"])
    assert page.get_by_test_id("fields-note").inner_text() == \
        f"{in_use} of 1,022 field ids in use"
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
    deadline = time.monotonic() + 30
    while shown(page, "m-1-nnz") is None and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert int(shown(page, "m-1-nnz") or -1) == \
        api(keyed_server.url, "/v1/variants", auth)["variants"][1]["nnz"]
    # the key is kept for the next visit
    assert page.evaluate("localStorage.getItem('ctr-dashboard-api-key')") == KEY
    page.close()


def test_dashboard_shows_the_overflow_field(browser: Browser, workdir: Path) -> None:
    """Past the last free field id, later fields share the overflow field: the page says
    so, with the feature occurrences learned there, and lists the field in the table."""
    s = start_server(workdir / "overflow", "--stats-every", "0.5")
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            for start in range(0, 1100, 100):
                events = [{"label": i % 2, "features": {f"junk{start + i}": "x"}}
                          for i in range(100)]
                assert c.post("/v1/train", json={"events": events}).status_code == 200
        page = open_dashboard(browser, s.url)
        wait_for_version(page, 1100)
        page.wait_for_function("document.querySelector('[data-testid=fields-note]')"
                               "?.textContent.includes('(overflow)')", timeout=30_000)
        note = page.get_by_test_id("fields-note").inner_text()
        assert note.startswith("1,022 of 1,022 field ids in use")
        assert "80 feature occurrences learned there" in note  # junk1020 .. junk1099
        assert page.locator("tr.overflow td").first.inner_text() == "(overflow)"
        assert not page.errors  # type: ignore[attr-defined]
        page.close()
    finally:
        s.stop()


def test_dashboard_shows_bounded_memory_per_field(browser: Browser, server: ServerProcess,
                                                  workdir: Path, shots: Path) -> None:
    """With --admit and --max-coordinates the page lists, per field, the admitted, refused,
    evicted and live coordinates that /v1/stats gives; without bounds the card is hidden."""
    s = start_server(workdir / "bounded", "--admit", "bloom:2", "--max-coordinates", "400",
                     "--stats-every", "0.5")
    try:
        train(s.url, 2000, seed=15)
        page = open_dashboard(browser, s.url)
        wait_for_version(page, 2000)
        page.get_by_test_id("bounded-card").wait_for(state="visible", timeout=10_000)
        models = api(s.url, "/v1/stats")["models"]
        assert models[0]["rows"] == 2000
        expected = models[0]["bounded_fields"]
        rows = page.get_by_test_id("bounded").locator("tbody tr")
        assert rows.count() == len(expected) >= 39
        evicted = 0
        for i in range(rows.count()):
            row = rows.nth(i)
            name = row.get_attribute("data-field") or ""
            got = {k: int(row.locator(f"td[data-col={k}]").get_attribute("data-value") or -1)
                   for k in ("admitted", "refused", "evicted", "live")}
            assert got == expected[name], name
            evicted += got["evicted"]
        assert evicted > 0  # the cap was enforced: the column is not all zeros
        assert sum(int(f["live"]) for f in expected.values()) == \
            api(s.url, "/v1/model")["coordinates"]
        page.screenshot(path=str(shots / "dashboard-bounded.png"), full_page=True)
        assert not page.errors  # type: ignore[attr-defined]
        page.close()
    finally:
        s.stop()
    page = open_dashboard(browser, server.url)  # no bounds: no card
    page.wait_for_selector("[data-testid=summary] tbody tr", timeout=30_000)
    assert page.get_by_test_id("bounded-card").is_hidden()
    page.close()


def join_post(url: str, path: str, events: list[dict[str, Any]]) -> None:
    r = httpx.post(url + path, json={"events": events}, timeout=30)
    assert r.status_code == 200, r.text


def test_the_join_panel_shows_what_v1_join_says(browser: Browser, workdir: Path,
                                                shots: Path) -> None:
    """Impressions, clicks within the window (5 s and 30 s after), an impression an hour
    of event time later that closes them, a late click and an unknown one: the panel's
    figures are /v1/join's, and the rates come from the page's successive polls."""
    s = start_server(workdir / "join", "--join-window", "60", "--stats-every", "0.5")
    try:
        page = open_dashboard(browser, s.url)
        page.get_by_test_id("join-panel").wait_for(state="visible", timeout=30_000)
        assert shown(page, "join-pending") == "0"
        opened = time.monotonic()
        feats = {"site": "s1", "ad": "a1"}
        join_post(s.url, "/v1/impressions",
                  [{"id": f"a{i}", "ts": 1000.0, "features": feats} for i in range(10)])
        join_post(s.url, "/v1/feedback", [{"id": f"a{i}", "ts": 1005.0} for i in range(4)])
        join_post(s.url, "/v1/feedback", [{"id": "a4", "ts": 1030.0}])
        join_post(s.url, "/v1/impressions", [{"id": "b0", "ts": 4600.0, "features": feats}])
        join_post(s.url, "/v1/feedback", [{"id": "a5", "ts": 4601.0}, {"id": "nope"}])
        status = api(s.url, "/v1/join")
        assert (status["pending"], status["joined"], status["expired"], status["late"],
                status["unknown"]) == (1, 5, 10, 1, 1)
        page.wait_for_function("document.querySelector('[data-testid=join-unknown]')"
                               "?.getAttribute('data-value') === '1'", timeout=30_000)
        elapsed = time.monotonic() - opened
        for key in ("pending", "joined", "expired", "late", "unknown", "negatives_dropped"):
            testid = "join-" + key.replace("_", "-")
            assert int(shown(page, testid) or -1) == status[key], key
        counts = status["click_delay_seconds"]["counts"]
        assert counts[1] == 4 and counts[2] == 1 and sum(counts) == 5  # <= 10 s, <= 60 s
        for i, n in enumerate(counts):
            assert int(shown(page, f"join-delay-{i}-count") or -1) == n, i
        assert page.get_by_test_id("join-delays").locator("tbody tr").count() == len(counts)
        # rates over the page's polls (at least 1 s apart, all within `elapsed`): 5 joins
        # and 10 expiries since the first poll
        joins = float(shown(page, "join-joins-per-s") or "nan")
        expiries = float(shown(page, "join-expiries-per-s") or "nan")
        assert 5 / (elapsed + 1) <= joins <= 5.0
        assert expiries == pytest.approx(2 * joins)
        page.get_by_test_id("join-panel").screenshot(path=str(shots / "dashboard-join.png"))
        assert not page.errors  # type: ignore[attr-defined]
        page.close()
    finally:
        s.stop()


def test_no_join_panel_with_prediction_workers(browser: Browser, workdir: Path) -> None:
    """With the memory store and prediction workers (``--workers 2``) /v1/join answers 501
    (the join runs with one worker or a Redis store): the panel stays hidden, the page asks
    no more, and the rest of the page works."""
    s = start_server(workdir / "workers", "--workers", "2", "--data-dir",
                     str(workdir / "workers" / "data"), "--stats-every", "0.5")
    try:
        assert httpx.get(s.url + "/v1/join", timeout=30).status_code == 501
        train(s.url, 500, seed=15)
        page = open_dashboard(browser, s.url)
        wait_for_version(page, 500)
        page.wait_for_function("state.join.off === true", timeout=10_000)
        assert page.get_by_test_id("join-panel").is_hidden()
        assert page.get_by_test_id("auth-message").is_hidden()
        assert not page.errors  # type: ignore[attr-defined]
        page.close()
    finally:
        s.stop()
