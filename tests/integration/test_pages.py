"""The dispatcher's dashboard in a real browser (Debian's headless Chromium through its
ChromeDriver): van markers appear and move live, clicking a van lists its parcels, an
exception raised meanwhile appears in the panel; screenshots go to var/screenshots/."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import ROOT, Proc, free_port
from tests.integration.test_gps_slice import pub

SHOTS = ROOT / "var" / "screenshots"
LON, LAT = 13.5300, 52.6300


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1920,1080"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_the_dashboard_live(ingest: Proc, spawn: Callable[..., Proc], cli: Callable[..., str],
                            tmp_path: Path, browser: WebDriver) -> None:  # fmt: skip
    # an API of its own, so the test can take it away and bring it back
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"

    def start_api() -> Proc:
        proc = spawn("api", extra_env={"MILEPOST_API_ADDR": f"127.0.0.1:{port}"})
        proc.wait_for("Uvicorn running")
        return proc

    api = start_api()
    tag = secrets.token_hex(3).upper()
    van, stop, hub, tn = f"DB{tag}-VAN", f"DB{tag}-S", f"DB{tag}-HUB", f"DB{tag}-P1"
    path = tmp_path / "m.json"
    path.write_text(json.dumps({
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 40, "name": "3 Oak Lane",
                   "geofence": {"type": "Point", "coordinates": [LON + 0.01, LAT]}},
                  {"stop_id": hub, "kind": "hub", "radius_m": 80,
                   "geofence": {"type": "Point", "coordinates": [LON, LAT]}}],
        "vehicles": [{"vehicle_id": van}],
        "parcels": [{"tracking_number": tn, "stop_id": stop, "temp_min_c": 2,
                     "temp_max_c": 8}],
        "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": [stop]}],
    }))  # fmt: skip
    password = cli("devices", "add", van)
    cli("manifest", "load", str(path))
    key = cli("keys", "create", "--role", "dispatcher")
    time.sleep(5.5)  # the plan is re-read every 5 s
    now = datetime.now(UTC).replace(microsecond=0)

    def fix(k: int, lon: float) -> None:
        body = orjson.dumps({"ts": (now + timedelta(seconds=k)).isoformat(), "lon": lon,
                             "lat": LAT, "speed": 9.0})  # fmt: skip
        assert pub(van, password, f"fleet/{van}/gps", [body]).returncode == 0

    fix(0, LON + 0.002)
    # a parcel seen aboard by the van's cargo reader: its van's parcels list has it
    cargo = orjson.dumps({"ts": now.isoformat(), "epcs": []})
    assert pub(van, password, f"fleet/{van}/cargo", [cargo]).returncode == 0
    time.sleep(1.0)

    b = browser
    b.get(f"{api_url}/dashboard")
    wait = WebDriverWait(b, 20)
    wait.until(ec.visibility_of_element_located((By.ID, "key"))).send_keys(key + "\n")
    marker = f'path.van[data-vehicle="{van}"]'
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, marker)))
    wait.until(lambda d: d.find_element(By.ID, "status").text == "live")
    first = b.find_element(By.CSS_SELECTOR, marker).get_attribute("d")
    shot(b, "dashboard-1")
    fix(5, LON + 0.006)  # the van drives east: its marker moves, no reload
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, marker).get_attribute("d") != first)

    # clicking the van (through its list entry, as a keyboard user would) lists its parcels
    b.find_element(By.XPATH, f'//ul[@id="vans"]//button[contains(., "{van}")]').click()
    wait.until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, f'#van-parcels button[data-tracking="{tn}"]')))
    assert "Van " + van in b.find_element(By.ID, "detail").text

    # a warm cargo space while the parcel is bound to the van: a cold-chain exception, live
    bind = orjson.dumps({"ts": (now + timedelta(seconds=6)).isoformat(), "tracking_number": tn,
                         "outcome": "failed", "reason": "nobody home"})  # fmt: skip
    assert pub(van, password, f"fleet/{van}/pod", [bind]).returncode == 0
    warm = orjson.dumps({"ts": (now + timedelta(seconds=8)).isoformat(), "temp_c": 12.5})
    assert pub(van, password, f"fleet/{van}/sensor", [warm]).returncode == 0
    item = f'#exceptions button[data-tracking="{tn}"]'
    wait.until(lambda d: "COLD_CHAIN" in d.find_element(By.CSS_SELECTOR, item).text)
    b.find_element(By.CSS_SELECTOR, item).click()
    wait.until(lambda d: "Exception_COLD_CHAIN" in d.find_element(By.ID, "detail").text)
    shot(b, "dashboard-2")
    # at 360 px the page still shows the map and the panel, one under the other
    b.set_window_size(360, 800)
    time.sleep(0.5)
    assert b.find_element(By.ID, "map").size["width"] <= 360
    assert b.find_element(By.ID, "exceptions").is_displayed()
    shot(b, "dashboard-360")
    b.set_window_size(1920, 1080)
    # no request left the machine: every resource came from the API itself
    urls = b.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(api_url) for u in urls), urls

    # the live stream drops (the API goes away) and comes back: the page says so, then
    # carries on without a reload
    api.stop()
    wait.until(lambda d: "reconnecting" in d.find_element(By.ID, "status").text)
    start_api()
    wait.until(lambda d: d.find_element(By.ID, "status").text == "live")
    moved = b.find_element(By.CSS_SELECTOR, marker).get_attribute("d")
    fix(20, LON + 0.009)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, marker).get_attribute("d") != moved)


def test_the_tracking_page_in_the_browser(ingest: Proc, api_url: str, cli: Callable[..., str],
                                          db: psycopg.Connection, tmp_path: Path,
                                          browser: WebDriver) -> None:  # fmt: skip
    tag = secrets.token_hex(3).upper()
    stop, tn = f"TP{tag}-S", f"TP{tag}-P1"
    path = tmp_path / "m.json"
    path.write_text(json.dumps({
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 40, "name": "3 Oak Lane",
                   "geofence": {"type": "Point", "coordinates": [LON, LAT]}}],
        "parcels": [{"tracking_number": tn, "stop_id": stop}]}))  # fmt: skip
    cli("manifest", "load", str(path))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    db.execute("UPDATE parcel_latest SET status = 'OutForDelivery', sub_status ="
               " 'OutForDelivery_001', eta = %s, eta_earliest = %s, eta_latest = %s"
               " WHERE tracking_number = %s",
               (start + timedelta(minutes=15), start, start + timedelta(minutes=30), tn))
    b = browser
    for width in (360, 1920):
        b.set_window_size(width, 900)
        b.get(f"{api_url}/track/{tn}")
        assert b.find_element(By.ID, "status").text == "Out for delivery"
        assert "Expected" in b.page_source and "between" in b.page_source
        shot(b, f"track-{width}")
    b.get(f"{api_url}/track/NOSUCH-{tag}")
    assert b.find_element(By.ID, "status").text == "We could not find that parcel"
