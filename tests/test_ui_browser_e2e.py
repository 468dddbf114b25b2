"""The console in a real browser: Debian's headless Chromium driven through chromium-driver by Selenium,
against `slo-monitor serve` scraping three fake vLLM servers, one of them slow enough to be ejected.

Screenshots of every page go to $SLO_MONITOR_SCREENSHOTS (CI keeps that folder) or the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.helpers.ci import require
from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "console-e2e-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000")


def _selenium():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        return None
    return webdriver, Service, By


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SLO_MONITOR_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path):
    found = _selenium()
    require(found is not None, "selenium is not installed (pip install -e .[test])")
    require(CHROMIUM is not None and DRIVER is not None, "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver)")
    webdriver, service_cls, _ = found
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=service_cls(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fleet():
    fast = ClockedVllm(rps=20, ttft=(0.05, 0.1), kv=0.3, waiting=0, seed=1)
    steady = ClockedVllm(rps=20, ttft=(0.05, 0.1), kv=0.3, waiting=0, seed=2)
    slow = ClockedVllm(rps=20, ttft=(3.0, 4.0), kv=0.3, waiting=0, seed=3)  # TTFT p99 past the 1s eject threshold
    with PageServer(fast) as a, PageServer(steady) as b, PageServer(slow) as c:
        yield a, b, c


def _snap(driver, folder: Path, name: str) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 700), 4000))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def test_the_console_shows_the_ejected_instance_draws_the_budget_and_keeps_the_status_page_public(
        fleet, browser, screenshots, tmp_path):
    _, _, by = _selenium()
    a, b, slow = fleet
    port = free_port()
    config = tmp_path / "monitor.yaml"
    config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/monitor.db"}}
scrape: {{interval: 500ms, timeout: 400ms}}
evaluation: {{window: 4s}}
api: {{token: {TOKEN}}}
ui: {{status_page: true}}
pools:
  - name: chat
    targets: [{a.url}, {b.url}, {slow.url}]
    health: {{min_requests: 1}}
slos:
  - name: ttft-500ms
    indicator: {{type: latency, metric: ttft, threshold: 500ms}}
    objective: 99%
  - name: availability
    indicator: {{type: availability}}
    objective: 99.5%
""")
    proc = serve(config, port)
    base = f"http://127.0.0.1:{port}"
    victim = f"127.0.0.1:{slow.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        def ejected():
            try:
                items = httpx.get(f"{base}/api/v1/instances", headers=auth, timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return None
            return next((i for i in items if i["instance"] == victim and i["state"] == "ejected"), None)

        verdict = wait_until(ejected, 60, what="the slow instance ejected")
        reason = verdict["reasons"][0]

        # --- the login: a wrong token is refused and sets no cookie; the right one opens the console
        browser.get(f"{base}/ui/")
        assert "/ui/login" in browser.current_url
        _snap(browser, screenshots, "login")
        browser.find_element(by.ID, "token").send_keys("wrong-token")
        browser.find_element(by.CSS_SELECTOR, "form.login button").click()
        assert "Wrong token" in browser.find_element(by.CSS_SELECTOR, "p.error").text
        assert browser.get_cookies() == []
        browser.find_element(by.ID, "token").send_keys(TOKEN)
        browser.find_element(by.CSS_SELECTOR, "form.login button").click()
        wait_until(lambda: browser.current_url.endswith("/ui/"), 10, what="the fleet page after signing in")
        cookie = browser.get_cookies()[0]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        assert TOKEN not in browser.current_url

        # --- the fleet: the ejected instance with its reason
        row = browser.find_element(by.XPATH, f"//table[contains(@class,'fleet')]//tr[td/a[text()='{victim}']]")
        assert "ejected" in row.text and reason.split(" (")[0][:30] in row.text, (row.text, reason)
        wait_until(lambda: browser.find_elements(by.CSS_SELECTOR, "time[title]"), 10, what="times in the browser's zone")
        _snap(browser, screenshots, "fleet")

        # --- the instance page: verdict history and reasons
        browser.get(f"{base}/ui/instances/{victim}")
        assert "ejected" in browser.find_element(by.CSS_SELECTOR, "dl.facts").text
        wait_until(lambda: "ejected" in browser.find_element(by.CSS_SELECTOR, "table.decisions").text, 10, what="the ejection in the instance's verdict history")
        _snap(browser, screenshots, "instance")

        # --- the SLOs: the budget burn-down drawn by uPlot, fetched from the API with the cookie
        browser.get(f"{base}/ui/slos")

        def drawn():
            canvases = browser.find_elements(by.CSS_SELECTOR, ".chart.budget canvas")
            return [c for c in canvases if c.size["width"] > 0 and c.size["height"] > 0]

        wait_until(drawn, 15, what="the budget chart drawn")
        assert "Burn rates per window" in browser.page_source
        _snap(browser, screenshots, "slos")

        for path, name in (("/ui/decisions", "decisions"), ("/ui/pools", "pools"), ("/ui/reports", "report")):
            browser.get(base + path)
            assert browser.find_element(by.TAG_NAME, "h1").text
            _snap(browser, screenshots, name)
        browser.get(f"{base}/ui/decisions")
        assert victim in browser.page_source and "ejected" in browser.page_source

        # --- the status page: open without the cookie, nothing internal
        browser.delete_all_cookies()
        browser.get(f"{base}/status")
        page = browser.page_source
        assert "Service status" in page and "chat" in page and "30 d" in page
        for internal in ("127.0.0.1", victim, "TTFT p99", reason[:20], "ejected"):
            assert internal not in page, internal
        _snap(browser, screenshots, "status")

        # --- signing out: the console asks for the token again
        browser.get(f"{base}/ui/login")
        browser.find_element(by.ID, "token").send_keys(TOKEN)
        browser.find_element(by.CSS_SELECTOR, "form.login button").click()
        wait_until(lambda: browser.current_url.endswith("/ui/"), 10, what="signed in again")
        browser.find_element(by.CSS_SELECTOR, "form.logout button").click()
        wait_until(lambda: "/ui/login" in browser.current_url, 10, what="the login form after signing out")
        browser.get(f"{base}/ui/slos")
        assert "/ui/login" in browser.current_url
    finally:
        stop(proc)
