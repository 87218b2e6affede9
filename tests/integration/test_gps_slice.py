"""The first slice end to end: vans -> Mosquitto -> milepost ingest -> TimescaleDB -> API."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.integration.conftest import Proc, wait_until

BROKER = ["-h", "127.0.0.1", "-p", "18830"]


def pub(
    user: str, password: str, topic: str, lines: list[bytes]
) -> subprocess.CompletedProcess[bytes]:
    """Publish each line as one QoS 1 message with the real mosquitto_pub client."""
    return subprocess.run(["mosquitto_pub", *BROKER, "-u", user, "-P", password, "-q", "1",
                           "-t", topic, "-l"], input=b"\n".join(lines) + b"\n",
                          capture_output=True, timeout=60)  # fmt: skip


def pub_raw(user: str, password: str, topic: str, payload: bytes) -> None:
    """Publish arbitrary bytes (NULs and newlines included) as one message."""
    out = subprocess.run(["mosquitto_pub", *BROKER, "-u", user, "-P", password, "-q", "1",
                          "-t", topic, "-s"], input=payload, capture_output=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr


def count(db: psycopg.Connection, sql: str, *args: object) -> int:
    row = db.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def vans(cli: Callable[..., str]) -> dict[str, str]:
    tag = secrets.token_hex(3).upper()
    return {f"T{tag}-VAN-{i:02d}": cli("devices", "add", f"T{tag}-VAN-{i:02d}")
            for i in range(10)}  # fmt: skip


@pytest.fixture(scope="module")
def dispatcher_key(cli: Callable[..., str]) -> str:
    return cli("keys", "create", "--role", "dispatcher", "--name", "test")


def test_time_series_tables_are_hypertables(db: psycopg.Connection) -> None:
    hyper = {r[0] for r in db.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert hyper == {"gps_fix", "tag_read", "gate_pass", "cargo_scan", "sensor_reading",
                     "geofence_event", "parcel_event", "eta_snapshot", "dead_letter"}
    tables = {r[0] for r in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"vehicle", "stop", "gate", "parcel", "route", "route_stop", "vehicle_latest",
            "parcel_latest", "webhook", "webhook_outbox", "api_key", "schema_version"} <= tables


def test_thousand_fixes_from_ten_vans_land_exactly_once(
    ingest: Proc, db: psycopg.Connection, vans: dict[str, str], api_url: str,
    dispatcher_key: str,
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    newest = {}
    for i, (vid, password) in enumerate(vans.items()):
        lines = []
        for k in range(100):
            ts = t0 + timedelta(seconds=k)
            lines.append(orjson.dumps({"ts": ts.isoformat(), "lat": 52.5 + i * 0.001 + k * 1e-5,
                                       "lon": 13.4 + k * 1e-5, "speed": 8.0, "seq": k}))
        newest[vid] = (t0 + timedelta(seconds=99), 13.4 + 99e-5)
        out = pub(vid, password, f"fleet/{vid}/gps", lines)
        assert out.returncode == 0, out.stderr
    ids = list(vans)
    wait_until(lambda: count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = ANY(%s)",
                             ids) >= 1000, what="1000 fixes in gps_fix")  # fmt: skip
    assert count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = ANY(%s)", ids) == 1000
    assert count(db, "SELECT count(DISTINCT vehicle_id) FROM gps_fix WHERE vehicle_id = ANY(%s)",
                 ids) == 10  # fmt: skip

    def listed_now() -> dict[str, dict[str, object]]:
        r = httpx.get(f"{api_url}/v1/vehicles",
                      headers={"Authorization": f"Bearer {dispatcher_key}"})  # fmt: skip
        assert r.status_code == 200, r.text
        return {v["vehicle_id"]: v for v in r.json()["vehicles"] if v["vehicle_id"] in vans}

    # the fleet list is a shared snapshot, rebuilt within a second of a new position
    wait_until(lambda: set(listed_now()) == set(vans), timeout=3, what="the vans listed")
    listed: dict[str, Any] = listed_now()
    for vid, (ts, lon) in newest.items():
        assert datetime.fromisoformat(listed[vid]["time"]) == ts
        assert listed[vid]["lon"] == pytest.approx(lon)

    # the same messages again (a redelivery): still exactly 1000 rows
    vid, password = next(iter(vans.items()))
    again = [orjson.dumps({"ts": (t0 + timedelta(seconds=k)).isoformat(), "lat": 52.5,
                           "lon": 13.4}) for k in range(100)]  # fmt: skip
    marker_ts = t0 + timedelta(seconds=500)
    again.append(orjson.dumps({"ts": marker_ts.isoformat(), "lat": 52.5, "lon": 13.4}))
    assert pub(vid, password, f"fleet/{vid}/gps", again).returncode == 0
    wait_until(lambda: count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND time = %s",
                             vid, marker_ts), what="marker fix")  # fmt: skip
    assert count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = ANY(%s)", ids) == 1001


def test_a_van_cannot_publish_as_another_van(
    ingest: Proc, db: psycopg.Connection, vans: dict[str, str]
) -> None:
    (a, pw_a), (b, _) = list(vans.items())[:2]
    ts = datetime.now(UTC) - timedelta(seconds=30)
    spoof = orjson.dumps({"ts": ts.isoformat(), "lat": 48.0, "lon": 11.0})
    pub(a, pw_a, f"fleet/{b}/gps", [spoof])  # the broker drops it (ACL)
    marker = orjson.dumps({"ts": ts.isoformat(), "lat": 48.0, "lon": 11.0})
    assert pub(a, pw_a, f"fleet/{a}/gps", [marker]).returncode == 0
    wait_until(lambda: count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND lat = 48",
                             a), what="own fix")  # fmt: skip
    assert count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND lat = 48", b) == 0


def test_anonymous_and_wrong_password_are_refused(vans: dict[str, str]) -> None:
    vid = next(iter(vans))
    anon = subprocess.run(["mosquitto_pub", *BROKER, "-t", f"fleet/{vid}/gps", "-m", "{}"],
                          capture_output=True, timeout=30)  # fmt: skip
    assert anon.returncode != 0
    wrong = pub(vid, "not-the-password", f"fleet/{vid}/gps", [b"{}"])
    assert wrong.returncode != 0


def test_malformed_payload_goes_to_dead_letter_and_ingest_keeps_going(
    ingest: Proc, db: psycopg.Connection, vans: dict[str, str]
) -> None:
    vid, password = list(vans.items())[2]
    garbage = b"\x00\xffnot\njson " + secrets.token_hex(4).encode()
    bad_row = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "lat": 123.0, "lon": 13.0})
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    good = orjson.dumps({"ts": ts.isoformat(), "lat": 52.6, "lon": 13.5})
    pub_raw(vid, password, f"fleet/{vid}/gps", garbage)
    assert pub(vid, password, f"fleet/{vid}/gps", [bad_row, good]).returncode == 0
    wait_until(lambda: count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND time = %s",
                             vid, ts), what="the good fix after the bad ones")  # fmt: skip
    row = db.execute("SELECT source, payload, reason FROM dead_letter WHERE payload = %s",
                     (garbage,)).fetchone()  # fmt: skip
    assert row is not None
    assert row[0] == f"fleet/{vid}/gps" and bytes(row[1]) == garbage
    assert row[2].startswith("not JSON")
    reasons = [r[0] for r in db.execute(
        "SELECT reason FROM dead_letter WHERE source = %s", (f"vehicle:{vid}",))]
    assert "invalid fix: latitude out of range [-90, 90]" in reasons
    assert ingest.proc.poll() is None
    ingest.wait_for("rejected")


def test_api_keys_roles_and_error_format(
    api_url: str, dispatcher_key: str, cli: Callable[..., str], vans: dict[str, str],
    ingest: Proc, db: psycopg.Connection,
) -> None:
    r = httpx.get(f"{api_url}/v1/vehicles")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": "Bearer mp_00000000_nope"})
    assert r.status_code == 401
    customer = cli("keys", "create", "--role", "customer")
    r = httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": f"Bearer {customer}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    revoked = cli("keys", "create", "--role", "dispatcher")
    cli("keys", "revoke", revoked)
    r = httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": f"Bearer {revoked}"})
    assert r.status_code == 401

    auth = {"Authorization": f"Bearer {dispatcher_key}"}
    r = httpx.get(f"{api_url}/v1/vehicles/NO-SUCH-VAN/track", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(f"{api_url}/v1/vehicles", params={"bbox": "1,2,3"}, headers=auth)
    assert r.status_code == 422


def test_track_raw_and_downsampled(
    api_url: str, dispatcher_key: str, vans: dict[str, str], ingest: Proc,
    db: psycopg.Connection,
) -> None:
    vid, password = list(vans.items())[5]
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    lines = [orjson.dumps({"ts": (t0 + timedelta(seconds=10 * k)).isoformat(), "lat": 52.5,
                           "lon": 13.4 + k * 1e-4, "speed": float(k)}) for k in range(30)]
    assert pub(vid, password, f"fleet/{vid}/gps", lines).returncode == 0
    wait_until(lambda: count(db, "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND time < %s",
                             vid, t0 + timedelta(hours=1)) == 30, what="30 fixes")  # fmt: skip
    auth = {"Authorization": f"Bearer {dispatcher_key}"}
    params = {"start": t0.isoformat(), "end": (t0 + timedelta(minutes=5)).isoformat()}
    r = httpx.get(f"{api_url}/v1/vehicles/{vid}/track", params=params, headers=auth)
    assert r.status_code == 200, r.text
    assert len(r.json()["points"]) == 30 and r.json()["next_cursor"] is None
    r = httpx.get(f"{api_url}/v1/vehicles/{vid}/track", params={**params, "bucket": "1m"},
                  headers=auth)  # fmt: skip
    points = r.json()["points"]
    assert len(points) == 5
    assert points[0]["speed_mps"] == pytest.approx(2.5)  # avg of 0..5
    assert points[0]["lon"] == pytest.approx(13.4 + 5e-4)  # last in the minute
    r = httpx.get(f"{api_url}/v1/vehicles/{vid}/track", params={**params, "limit": 20},
                  headers=auth)  # fmt: skip
    page = r.json()
    assert len(page["points"]) == 20 and page["next_cursor"]
    r = httpx.get(f"{api_url}/v1/vehicles/{vid}/track",
                  params={**params, "start": page["next_cursor"]}, headers=auth)  # fmt: skip
    assert len(r.json()["points"]) == 10


def test_healthz_reports_database_and_broker(api_url: str) -> None:
    r = httpx.get(f"{api_url}/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["database"] == "up" and body["broker"] == "up" and body["schema_version"] >= 1
