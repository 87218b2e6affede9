"""GET /track/{tracking_number}: the customer's page through the real API, with parcel
events made by the running ingest from a van's fixes and its proofs of delivery."""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import psycopg
import pytest

from api.routes.track import eta_text
from tests.integration.conftest import Proc, free_port, wait_until
from tests.integration.test_gps_slice import pub

HUB_LON, HUB_LAT = 13.6100, 52.4100  # a corner of the map no other test uses
M_PER_DEG_LAT = 111_195.0
NOT_FOUND = "We could not find that parcel"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src {img}; base-uri 'none';"
       " form-action 'none'; frame-ancestors 'none'")  # fmt: skip


def north(m: float) -> float:
    return HUB_LAT + m / M_PER_DEG_LAT


def text_of(page: str) -> str:
    """What a reader sees: tags and the style block removed, entities decoded,
    whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def h1(page: str) -> str:
    found = re.findall(r"<h1[^>]*>(.*?)</h1>", page, flags=re.S)
    assert len(found) == 1, found
    return html.unescape(found[0])


def check_headers(r: httpx.Response, img: str = "'self'") -> None:
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-security-policy"] == CSP.format(img=img)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def load(cli: Callable[..., str], tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / f"m-{secrets.token_hex(2)}.json"
    path.write_text(json.dumps(doc))
    cli("manifest", "load", str(path))


def latest(db: psycopg.Connection, tn: str) -> dict[str, Any]:
    cur = db.execute("SELECT status, sub_status, vehicle_id, eta, eta_earliest, eta_latest"
                     " FROM parcel_latest WHERE tracking_number = %s", (tn,))  # fmt: skip
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def test_a_parcel_from_the_manifest_to_the_door(
    ingest: Proc, api_url: str, cli: Callable[..., str], db: psycopg.Connection, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3).upper()
    van, hub, s1, s2 = (f"TRK{tag}-{x}" for x in ("VAN", "HUB", "S1", "S2"))
    p1, p2 = f"TRK{tag}P1", f"TRK{tag}P2"
    now = datetime.now(UTC).replace(microsecond=0)
    promised = now + timedelta(days=3)  # a weekday, even if the test runs over midnight
    d = 0.0013
    ring = [[HUB_LON - d, HUB_LAT - d], [HUB_LON + d, HUB_LAT - d], [HUB_LON + d, HUB_LAT + d],
            [HUB_LON - d, HUB_LAT + d], [HUB_LON - d, HUB_LAT - d]]  # fmt: skip
    load(cli, tmp_path, {
        "stops": [
            {"stop_id": hub, "kind": "hub", "geofence": {"type": "Polygon", "coordinates": [ring]}},
            {"stop_id": s1, "kind": "delivery", "name": "<script>alert('x')</script>",
             "radius_m": 40, "geofence": {"type": "Point", "coordinates": [HUB_LON, north(1500)]}},
            {"stop_id": s2, "kind": "delivery", "name": "2 Oak Road", "radius_m": 40,
             "geofence": {"type": "Point", "coordinates": [HUB_LON, north(4000)]}},
        ],
        "vehicles": [{"vehicle_id": van}],
        # no tags, no gates: the parcels go out with the van by plan when it leaves the hub
        "parcels": [{"tracking_number": p1, "stop_id": s1, "promised_by": promised.isoformat()},
                    {"tracking_number": p2, "stop_id": s2}],
        "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": [s1, s2]}],
    })  # fmt: skip
    password = cli("devices", "add", van)

    def page(tn: str) -> tuple[httpx.Response, str]:
        r = httpx.get(f"{api_url}/track/{tn}")
        assert r.status_code == 200, r.text
        check_headers(r)
        assert van not in r.text and "VAN" not in r.text  # no vehicle id, anywhere
        assert s1 not in r.text and s2 not in r.text and hub not in r.text  # nor stop ids
        return r, text_of(r.text)

    # on the manifest: its details, the promise, the (escaped) address, no van yet
    r, text = page(p1)
    assert h1(r.text) == "We have your parcel's details"
    assert f"Promised by {promised:%H:%M} UTC on {promised:%A}" in text
    assert "Delivering to <script>alert('x')</script>" in text  # as text ...
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in r.text  # ... escaped
    assert "<script" not in r.text
    assert "Your driver" not in text and "Expected" not in text
    assert '<meta http-equiv="refresh" content="60">' in r.text

    time.sleep(5.5)  # the plan is re-read every 5 s

    def fix(dt_s: int, dist_m: float, speed: float) -> bytes:
        return orjson.dumps({"ts": (now + timedelta(seconds=dt_s)).isoformat(),
                             "lon": HUB_LON, "lat": north(dist_m), "speed": speed})

    # two minutes in the yard, out of the hub north at 10 m/s, then a stop 500 m on
    # (1 km before S1, 3.5 km before S2)
    fixes = ([fix(k, 0.0, 0.0) for k in range(-180, -55, 5)]
             + [fix(-55 + 5 * k, 50.0 * k, 10.0) for k in range(1, 11)]
             + [fix(k, 500.0, 0.0) for k in range(0, 35, 5)])  # fmt: skip
    assert pub(van, password, f"fleet/{van}/gps", fixes).returncode == 0
    wait_until(lambda: all(latest(db, t)["status"] == "OutForDelivery"
                           and latest(db, t)["eta"] is not None for t in (p1, p2)),
               timeout=30, what="both parcels out for delivery, with ETAs")  # fmt: skip
    l1, l2 = latest(db, p1), latest(db, p2)
    assert l1["vehicle_id"] == van and l1["eta"] < l2["eta"]

    r, text = page(p1)  # S1 is the van's next stop: its distance is shown
    assert h1(r.text) == "Out for delivery"
    assert eta_text(l1["eta_earliest"], l1["eta_latest"], datetime.now(UTC),
                    ZoneInfo("UTC")) in text  # fmt: skip
    assert "Your driver is about 1 km away" in text
    assert not re.search(r"\b52\.4\d|\b13\.61", r.text)  # never the van's coordinates
    history = text.split("History", 1)[1]
    assert history.index("Out for delivery") < history.index("We have your parcel's details")
    r, text = page(p2)  # S1 comes first: nothing about where the van is
    assert "Out for delivery" in text and "Expected" in text and "Your driver" not in text

    # a proof at S1: delivered, signed for, with a photo
    pods = [orjson.dumps({"ts": (now + timedelta(seconds=36)).isoformat(),
                          "tracking_number": p1, "outcome": "delivered", "signed_by": "A. Smith",
                          "photo_url": "https://pod.example.com/p/1.jpg"})]  # fmt: skip
    assert pub(van, password, f"fleet/{van}/pod", pods).returncode == 0
    wait_until(lambda: latest(db, p1)["status"] == "Delivered", what="P1 delivered")
    r, text = page(p1)
    assert h1(r.text) == "Delivered"
    assert re.search(r"Delivery Delivered \w+, \d\d:\d\d UTC Signed for by A\. Smith", text)
    assert '<a href="https://pod.example.com/p/1.jpg" rel="noopener noreferrer">' in r.text
    assert "Expected" not in text and "Promised" not in text and "Your driver" not in text
    assert "refresh" not in r.text
    assert "Delivered to <script>alert('x')</script>" in text

    # now S2 is next: its customer sees the van 3.5 km away
    r, text = page(p2)
    assert "Your driver is about 3.5 km away" in text

    # left at the door, with a photo that is not https: the note, no link
    pods = [orjson.dumps({"ts": (now + timedelta(seconds=40)).isoformat(),
                          "tracking_number": p2, "outcome": "delivered",
                          "reason": "left at the door",
                          "photo_url": "http://pod.example.com/p/2.jpg"})]  # fmt: skip
    assert pub(van, password, f"fleet/{van}/pod", pods).returncode == 0
    wait_until(lambda: latest(db, p2)["status"] == "Delivered", what="P2 delivered")
    r, text = page(p2)
    assert "Driver's note Left at the door" in text
    assert "pod.example.com" not in r.text and "Signed for" not in text


@pytest.fixture(scope="module")
def branded_url(spawn: Callable[..., Proc]) -> str:
    """An API with a brand, a logo on another origin and a time zone."""
    port = free_port()
    proc = spawn("api", extra_env={
        "MILEPOST_API_ADDR": f"127.0.0.1:{port}", "MILEPOST_TIMEZONE": "Europe/Berlin",
        "MILEPOST_BRAND_NAME": "Acme <Parcels>", "MILEPOST_BRAND_COLOR": "#0b6e4f",
        "MILEPOST_BRAND_LOGO_URL": "https://cdn.example.com/brand/acme.svg"})  # fmt: skip
    proc.wait_for("Uvicorn running")
    return f"http://127.0.0.1:{port}"


def test_eta_window_branding_and_time_zone(
    branded_url: str, cli: Callable[..., str], db: psycopg.Connection, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3).upper()
    tn, stop = f"TRK{tag}E1", f"TRK{tag}-S"
    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.now(berlin).date() + timedelta(days=3)
    lo = datetime(day.year, day.month, day.day, 14, 12, 30, tzinfo=berlin)
    hi = datetime(day.year, day.month, day.day, 14, 37, 10, tzinfo=berlin)
    promised = datetime(day.year, day.month, day.day, 18, 0, tzinfo=berlin)
    load(cli, tmp_path, {
        "stops": [{"stop_id": stop, "kind": "delivery", "name": "12 Elm St", "radius_m": 30,
                   "geofence": {"type": "Point", "coordinates": [HUB_LON + 0.1, HUB_LAT]}}],
        "parcels": [{"tracking_number": tn, "stop_id": stop,
                     "promised_by": promised.isoformat()}]})  # fmt: skip
    # no van serves it, so ingest leaves these ETA columns alone
    db.execute("UPDATE parcel_latest SET eta = %s, eta_earliest = %s, eta_latest = %s,"
               " eta_confidence = 0.8 WHERE tracking_number = %s",
               (lo + (hi - lo) / 2, lo, hi, tn))  # fmt: skip
    r = httpx.get(f"{branded_url}/track/{tn}")
    assert r.status_code == 200
    check_headers(r, img="https://cdn.example.com")
    text = text_of(r.text)
    zone = lo.tzname()
    assert f"Expected on {day:%A} between 14:10 and 14:40 {zone}" in text
    assert f"Promised by 18:00 {zone} on {day:%A}" in text
    assert '<img src="https://cdn.example.com/brand/acme.svg" alt="Acme &lt;Parcels&gt;">' in r.text
    assert "<title>We have your parcel&#x27;s details - Acme &lt;Parcels&gt;</title>" in r.text
    assert "--brand:#0b6e4f" in r.text
    # the page's own times are Berlin's too
    created = db.execute("SELECT created_at FROM parcel WHERE tracking_number = %s",
                         (tn,)).fetchone()  # fmt: skip
    assert created is not None
    assert f"{created[0].astimezone(berlin):%H:%M} {created[0].astimezone(berlin).tzname()}" in text

    # the branded 404 is the same page for every miss too, with the same headers
    a, b = httpx.get(f"{branded_url}/track/TRK{tag}NONE"), httpx.get(f"{branded_url}/track/?")
    assert a.status_code == b.status_code == 404 and a.text == b.text and "Acme" in a.text
    check_headers(a, img="https://cdn.example.com")


@pytest.fixture(scope="module")
def known(cli: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A parcel on the manifest, so that the misses sit next to a hit."""
    tag = secrets.token_hex(3).upper()
    tn, stop = f"TRK{tag}K1", f"TRK{tag}-KS"
    load(cli, tmp_path_factory.mktemp("known"), {
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 30,
                   "geofence": {"type": "Point", "coordinates": [HUB_LON - 0.1, HUB_LAT]}}],
        "parcels": [{"tracking_number": tn, "stop_id": stop}]})  # fmt: skip
    return tn


@pytest.mark.parametrize("number", [
    "x",  # too short
    "<script>alert(1)</script>",
    "MP100200300/timeline",  # a slash: still this page's 404, not the router's JSON one
    "A" * 41,  # too long
    "MP 100200300",
    "",
    "MP100200300%00",
])  # fmt: skip
def test_unknown_and_malformed_numbers_get_the_same_404(
    api_url: str, known: str, number: str
) -> None:
    assert httpx.get(f"{api_url}/track/{known}").status_code == 200
    unknown = httpx.get(f"{api_url}/track/{known[:-2]}K2")  # well-formed, on no manifest
    malformed = httpx.get(f"{api_url}/track/{number}")
    for r in (unknown, malformed):
        assert r.status_code == 404
        check_headers(r)
    assert malformed.text == unknown.text
    assert h1(unknown.text) == NOT_FOUND
    assert "TRK" not in unknown.text and "script>alert" not in malformed.text
    assert "refresh" not in unknown.text
