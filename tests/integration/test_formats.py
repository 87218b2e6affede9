"""Every GPS format end to end: published (or POSTed) as a device would, stored as decoded."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.devices.gps.test_nmea import CAPTURES, _chk_expectations
from tests.devices.gps.test_teltonika import C8_THREE
from tests.integration.conftest import Proc, wait_until
from tests.integration.test_gps_slice import BROKER, count, pub, pub_raw


def rows(db: psycopg.Connection, vehicle: str) -> list[tuple[datetime, float, float, float | None]]:
    return db.execute("SELECT time, lat, lon, speed_mps FROM gps_fix WHERE vehicle_id = %s"
                      " ORDER BY time", (vehicle,)).fetchall()  # fmt: skip


def tag() -> str:
    return secrets.token_hex(3).upper()


def test_nmea_captures_line_by_line(
    ingest: Proc, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    """Every capture in shared/data/nmea, one sentence per message: the fixes gpsd's .chk
    expects (time, position to 1e-6 degree), nothing for invalid sentences."""
    expected: dict[str, tuple[Path, set[str], dict[str, list[dict[str, float]]]]] = {}
    for log in sorted(CAPTURES, key=lambda p: p.name.startswith("garmin"), reverse=True):
        vid = f"NMEA-{tag()}"
        password = cli("devices", "add", vid)
        rmc_times, tpv = _chk_expectations(log.with_name(log.name + ".chk"))
        expected[vid] = (log, rmc_times, tpv)
        lines = [line for line in log.read_bytes().splitlines() if line.strip()]
        out = pub(vid, password, f"fleet/{vid}/nmea", lines)
        assert out.returncode == 0, out.stderr
    for vid, (log, rmc_times, _) in expected.items():
        n = len(rmc_times)
        wait_until(lambda v=vid, n=n: len(rows(db, v)) >= n,  # type: ignore[misc]
                   what=f"{n} fixes of {log.name}")  # fmt: skip
    for vid, (log, rmc_times, tpv) in expected.items():
        stored = rows(db, vid)
        assert {t.isoformat(timespec="milliseconds") for t, *_ in stored} == rmc_times, log.name
        for t, lat, lon, speed in stored:
            reports = tpv.get(t.isoformat(timespec="milliseconds"), [])
            if reports:
                assert any(abs(r["lat"] - lat) < 1e-6 and abs(r["lon"] - lon) < 1e-6
                           for r in reports), (log.name, t)  # fmt: skip
                assert speed is None or any(abs(r.get("speed", speed) - speed) < 1e-3
                                            for r in reports)  # fmt: skip
    firefly = next(v for v, (log, *_) in expected.items() if log.name == "firefly-II.log")
    reasons = [r[0] for r in db.execute(
        "SELECT reason FROM dead_letter WHERE source = %s", (f"fleet/{firefly}/nmea",))]
    assert any("checksum" in r for r in reasons), reasons
    assert all("checksum" in r or "no NMEA sentence" in r for r in reasons), reasons


def test_owntracks_through_the_registry(
    ingest: Proc, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    vid, user = f"OT-{tag()}", f"user{tag().lower()}"
    password = cli("devices", "add", vid, "--owntracks", f"{user}/phone")
    time.sleep(1.0)  # the broker reloads its password and ACL files on SIGHUP, asynchronously
    # READERS.md 5.2, the real example; and an iOS one with vel/cog -1 (unknown)
    real = (b'{"tst":1440403798,"acc":5,"_type":"location","alt":166,'
            b'"lon":12.71026164294473,"vac":6,"vel":35,"lat":51.26004282389884,"cog":118,'
            b'"tid":"NE","batt":88}')  # fmt: skip
    ios = (b'{"_type":"location","tst":1440403898,"lat":51.2601,"lon":12.7103,"acc":10,'
           b'"vel":-1,"cog":-1,"tid":"NE"}')  # fmt: skip
    lwt = b'{"_type":"lwt","tst":"1440403999"}'
    for payload in (real, lwt, ios):
        pub_raw(vid, password, f"owntracks/{user}/phone", payload)
    wait_until(lambda: len(rows(db, vid)) == 2, what="two OwnTracks fixes")
    (t1, lat1, lon1, v1), (_, _, _, v2) = rows(db, vid)
    assert t1 == datetime.fromtimestamp(1440403798, UTC)
    assert (lat1, lon1) == (51.26004282389884, 12.71026164294473)
    assert v1 == pytest.approx(35 / 3.6) and v2 is None
    assert count(db, "SELECT count(*) FROM dead_letter WHERE source = %s",
                 f"owntracks/{user}/phone") == 0  # fmt: skip

    # an OwnTracks device nobody registered: dead letter, with what to do
    other = f"OT-{tag()}"
    pw_other = cli("devices", "add", other, "--owntracks", f"ghost{tag().lower()}/pad")
    time.sleep(1.0)  # the broker reloads its password and ACL files on SIGHUP, asynchronously
    assert pub(other, pw_other, f"owntracks/{user}/phone", [real]).returncode == 0  # ACL: refused
    ghost = f"ghost{tag().lower()}"
    subprocess.run(["mosquitto_pub", *BROKER, "-u", vid, "-P", password, "-q", "1", "-t",
                    f"owntracks/{ghost}/x", "-m", real.decode()], timeout=30)  # fmt: skip
    time.sleep(1.0)
    assert len(rows(db, vid)) == 2  # neither the refused nor the foreign publish landed


def test_unregistered_owntracks_device_is_a_dead_letter_with_advice(
    ingest: Proc, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    # a vehicle registered with one OwnTracks id publishes under its ACL, but a second
    # id is then registered to nobody: simulate with add_broker_acl-only access
    from milepost import stack
    from tests.integration.conftest import STATE_DIR

    vid = f"OT-{tag()}"
    password = cli("devices", "add", vid)
    device = f"nobody{tag().lower()}/phone"
    stack.add_broker_acl(STATE_DIR, vid, [f"owntracks/{device}/#"])
    time.sleep(1.0)  # the broker reloads its password and ACL files on SIGHUP, asynchronously
    pub_raw(vid, password, f"owntracks/{device}",
            b'{"_type":"location","tst":1440403798,"lat":51.2,"lon":12.7}')  # fmt: skip
    wait_until(lambda: count(db, "SELECT count(*) FROM dead_letter WHERE source = %s",
                             f"owntracks/{device}"), what="dead letter")  # fmt: skip
    reason = db.execute("SELECT reason FROM dead_letter WHERE source = %s",
                        (f"owntracks/{device}",)).fetchone()  # fmt: skip
    assert reason is not None and f"--owntracks {device}" in reason[0]


def test_teltonika_binary_packet(
    ingest: Proc, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    vid = f"TT-{tag()}"
    password = cli("devices", "add", vid)
    time.sleep(1.0)  # the broker reloads its password and ACL files on SIGHUP, asynchronously
    pub_raw(vid, password, f"fleet/{vid}/teltonika", bytes.fromhex(C8_THREE))
    corrupt = bytearray.fromhex(C8_THREE)
    corrupt[-1] ^= 0xFF
    pub_raw(vid, password, f"fleet/{vid}/teltonika", bytes(corrupt))
    wait_until(lambda: len(rows(db, vid)) == 3, what="the packet's three records")
    wait_until(lambda: count(db, "SELECT count(*) FROM dead_letter WHERE source = %s",
                             f"fleet/{vid}/teltonika"), what="the corrupt packet")  # fmt: skip
    reason = db.execute("SELECT reason FROM dead_letter WHERE source = %s",
                        (f"fleet/{vid}/teltonika",)).fetchone()  # fmt: skip
    assert reason is not None and "CRC" in reason[0]


def test_osmand_query_form_and_json(
    ingest: Proc, api_url: str, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    vid, device = f"OA-{tag()}", str(secrets.randbelow(10**8))
    cli("devices", "add", vid, "--osmand", device)
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    # the Traccar Client's classic query form: speed in knots, timestamp in seconds
    r = httpx.get(f"{api_url}/osmand", params={
        "id": device, "lat": "52.51", "lon": "13.39", "timestamp": str(int(t.timestamp())),
        "speed": "10", "bearing": "90", "altitude": "40", "accuracy": "8", "batt": "77"})
    assert r.status_code == 200 and r.content == b""
    # form-encoded POST, timestamp in milliseconds
    r = httpx.post(f"{api_url}/osmand", data={
        "id": device, "lat": "52.52", "lon": "13.40",
        "timestamp": str(int(t.timestamp() * 1000) + 1000)})
    assert r.status_code == 200
    # Traccar Client 9 JSON: speed in m/s
    body = {"location": {"timestamp": (t + timedelta(seconds=2)).isoformat(),
                         "coords": {"latitude": 52.53, "longitude": 13.41, "speed": 4.5,
                                    "heading": 180, "accuracy": 5, "altitude": 41},
                         "is_moving": True, "battery": {"level": 0.7, "is_charging": False}},
            "device_id": device}  # fmt: skip
    r = httpx.post(f"{api_url}/osmand", content=orjson.dumps(body),
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200, r.text
    # answered once in fix_inbox; ingest stores them as every other transport's fixes
    wait_until(lambda: len(rows(db, vid)) == 3, what="the three reports in gps_fix")
    stored = rows(db, vid)
    assert [(x[1], x[2]) for x in stored] == [(52.51, 13.39), (52.52, 13.40), (52.53, 13.41)]
    assert stored[0][3] == pytest.approx(10 * 1852 / 3600) and stored[2][3] == 4.5
    assert stored[0][0] == t

    # unknown device: 400 in query mode, 404 in JSON mode, as Traccar answers
    assert httpx.get(f"{api_url}/osmand", params={"id": "no-such", "lat": "1", "lon": "1",
                                                  "timestamp": "1700000000"}).status_code == 400
    r = httpx.post(f"{api_url}/osmand", content=orjson.dumps({**body, "device_id": "no-such"}),
                   headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 404
    # malformed: 400 with the JSON error format, and a dead letter
    r = httpx.get(f"{api_url}/osmand", params={"id": device, "lat": "north", "lon": "1"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert count(db, "SELECT count(*) FROM dead_letter WHERE source = 'http:/osmand'"
                 " AND payload = %s", f"id={device}&lat=north&lon=1".encode()) == 1  # fmt: skip


def test_cargo_and_sensor_messages(
    ingest: Proc, db: psycopg.Connection, cli: Callable[..., str]
) -> None:
    vid = f"CG-{tag()}"
    password = cli("devices", "add", vid)
    time.sleep(1.0)  # the broker reloads its password and ACL files on SIGHUP, asynchronously
    scan = {"ts": "2026-11-24T08:00:00Z",
            "epcs": ["3074257bf7194e4000001a85", "3154257BF4499602D2000000"]}  # fmt: skip
    for _ in range(2):  # a redelivery stores nothing twice
        pub_raw(vid, password, f"fleet/{vid}/cargo", orjson.dumps(scan))
    pub_raw(vid, password, f"fleet/{vid}/sensor",
            b'{"ts": "2026-11-24T08:00:05Z", "temp_c": 4.5, "humidity": 61}')  # fmt: skip
    pub_raw(vid, password, f"fleet/{vid}/cargo", b'{"ts": 1, "epcs": ["xyz"]}')
    pub_raw(vid, password, f"fleet/{vid}/sensor", b'{"ts": "2026-11-24T08:00:06Z"}')
    wait_until(lambda: count(db, "SELECT count(*) FROM dead_letter WHERE source LIKE %s",
                             f"fleet/{vid}/%") == 2, what="two dead letters")  # fmt: skip
    both = ["3074257BF7194E4000001A85", "3154257BF4499602D2000000"]
    rows_ = db.execute("SELECT epcs, added, removed FROM cargo_scan WHERE vehicle_id = %s",
                       (vid,)).fetchall()  # fmt: skip
    assert rows_ == [(both, both, [])]
    # one missed read is not a removal; two in a row are
    for k, epcs in enumerate((both[:1], both[:1])):
        pub_raw(vid, password, f"fleet/{vid}/cargo", orjson.dumps(
            {"ts": f"2026-11-24T08:01:0{k}Z", "epcs": epcs}))  # fmt: skip
    wait_until(lambda: count(db, "SELECT count(*) FROM cargo_scan WHERE vehicle_id = %s",
                             vid) == 3, what="three scans")  # fmt: skip
    removed = [r[0] for r in db.execute(
        "SELECT removed FROM cargo_scan WHERE vehicle_id = %s ORDER BY time", (vid,))]
    assert removed == [[], [], both[1:]]
    sensor = db.execute("SELECT temp_c, humidity FROM sensor_reading WHERE vehicle_id = %s",
                        (vid,)).fetchall()  # fmt: skip
    assert sensor == [(4.5, 61.0)]
