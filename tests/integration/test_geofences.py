"""Geofence enter / dwell / exit from real fixes through milepost ingest, and the stop a
van is at in GET /v1/vehicles: from a van over MQTT, and from a phone running the Traccar
Client app (OsmAnd over HTTP, through the API's fix_inbox into the same stages)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.integration.conftest import Proc, wait_until
from tests.integration.test_gps_slice import pub

LAT = 52.5300  # the stop's; 0.001 deg of latitude is 111 m
LONS = {"mqtt": 13.4300, "osmand": 13.4600}  # each transport's stop, 2 km from the other
KNOT = 1852 / 3600  # m/s


@pytest.mark.parametrize("transport", ["mqtt", "osmand"])
def test_a_van_stopping_at_a_delivery_stop(
    ingest: Proc, api_url: str, cli: Callable[..., str], db: psycopg.Connection, tmp_path: Path,
    transport: str,
) -> None:  # fmt: skip
    tag = secrets.token_hex(3).upper()
    lon = LONS[transport]
    vid, stop = f"GF-{tag}", f"S-GF-{tag}"
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"stops": [{
        "stop_id": stop, "kind": "delivery", "radius_m": 40,
        "geofence": {"type": "Point", "coordinates": [lon, LAT]}}]}))  # fmt: skip
    cli("manifest", "load", str(path))
    device = f"gf{tag.lower()}"
    password = cli("devices", "add", vid, "--osmand", device)
    ingest.wait_for("geofences: ", timeout=15)
    time.sleep(5.5)  # the stop list is re-read every 5 s
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=4)  # recent: not "silent"

    def fix(k: int, lat: float) -> dict[str, Any]:
        return {"ts": t0 + timedelta(seconds=5 * k), "lat": lat, "lon": lon,
                "speed": 0.0 if lat == LAT else 8.0}  # fmt: skip

    def send(fixes: list[dict[str, Any]]) -> None:
        if transport == "mqtt":
            payloads = [orjson.dumps({**f, "ts": f["ts"].isoformat()}) for f in fixes]
            assert pub(vid, password, f"fleet/{vid}/gps", payloads).returncode == 0
            return
        for f in fixes:  # the app's query form, one report a request, speed in knots
            r = httpx.get(f"{api_url}/osmand", params={
                "id": device, "lat": str(f["lat"]), "lon": str(f["lon"]),
                "timestamp": str(int(f["ts"].timestamp())), "speed": str(f["speed"] / KNOT)})
            assert r.status_code == 200, r.text

    approach = [fix(k, LAT - 0.003 + k * 0.0005) for k in range(6)]  # 333 m south, driving in
    stay = [fix(6 + k, LAT) for k in range(24)]  # two minutes at the door
    leave = [fix(30 + k, LAT + 0.001 * (k + 1)) for k in range(4)]
    send(approach + stay)
    wait_until(lambda: db.execute("SELECT count(*) FROM geofence_event WHERE vehicle_id = %s",
                                  (vid,)).fetchone() == (2,), what="enter and dwell")  # fmt: skip
    key = cli("keys", "create", "--role", "dispatcher")

    def mine() -> dict[str, Any]:
        vans = httpx.get(f"{api_url}/v1/vehicles", headers={"Authorization": f"Bearer {key}"})
        return next(v for v in vans.json()["vehicles"] if v["vehicle_id"] == vid)

    # the fleet list is a shared snapshot, rebuilt within a second of a new position
    wait_until(lambda: mine()["stop_id"] == stop, timeout=3, what="the van at its stop")
    assert mine()["motion"] == "at_stop"

    send(leave)
    wait_until(lambda: db.execute("SELECT count(*) FROM geofence_event WHERE vehicle_id = %s",
                                  (vid,)).fetchone() == (3,), what="the exit")  # fmt: skip
    events = db.execute("SELECT kind, time, dwell_s, stop_id FROM geofence_event"
                        " WHERE vehicle_id = %s ORDER BY time, kind",
                        (vid,)).fetchall()  # fmt: skip
    kinds = [e[0] for e in events]
    assert sorted(kinds) == ["dwell", "enter", "exit"] and kinds[0] == "enter"
    enter, exit_ = events[0], next(e for e in events if e[0] == "exit")
    assert all(e[3] == stop for e in events)
    # inside from fix 6 (t0 + 30 s) to fix 29 (t0 + 145 s), within one fix interval
    assert abs((enter[1] - (t0 + timedelta(seconds=30))).total_seconds()) <= 5
    assert 110 <= exit_[2] <= 125
    wait_until(lambda: mine()["stop_id"] is None, timeout=3, what="the van off its stop")
