"""POST /v1/pod: a proof of delivery over HTTP reaches the parcel's lifecycle in ingest,
once, with the van's position checked against the stop."""

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

from tests.integration.conftest import Proc, wait_until
from tests.integration.test_gps_slice import pub

LON, LAT = 13.4900, 52.5900


def test_a_proof_posted_to_the_api_delivers_the_parcel(
    ingest: Proc, api_url: str, cli: Callable[..., str], db: psycopg.Connection, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3).upper()
    van, stop, near, far = f"POD{tag}-VAN", f"POD{tag}-S", f"POD{tag}-P1", f"POD{tag}-P2"
    path = tmp_path / "m.json"
    path.write_text(json.dumps({
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 40,
                   "geofence": {"type": "Point", "coordinates": [LON, LAT]}},
                  {"stop_id": f"{stop}-HUB", "kind": "hub", "radius_m": 100,
                   "geofence": {"type": "Point", "coordinates": [LON + 0.05, LAT]}},
                  {"stop_id": f"{stop}-2", "kind": "delivery", "radius_m": 40,
                   "geofence": {"type": "Point", "coordinates": [LON - 0.05, LAT]}}],
        "vehicles": [{"vehicle_id": van}, {"vehicle_id": f"{van}-2"}],
        "parcels": [{"tracking_number": near, "stop_id": stop},
                    {"tracking_number": far, "stop_id": stop},
                    {"tracking_number": f"{near}-2", "stop_id": f"{stop}-2"}],
        "routes": [{"vehicle_id": van, "hub_stop_id": f"{stop}-HUB", "stop_ids": [stop]},
                   {"vehicle_id": f"{van}-2", "hub_stop_id": f"{stop}-HUB",
                    "stop_ids": [f"{stop}-2"]}],
    }))  # fmt: skip
    password = cli("devices", "add", van)
    cli("manifest", "load", str(path))
    time.sleep(5.5)  # the plan is re-read every 5 s
    now = datetime.now(UTC).replace(microsecond=0)
    fixes = [orjson.dumps({"ts": (now + timedelta(seconds=k)).isoformat(), "lon": LON,
                           "lat": LAT + (0.0 if k < 30 else 0.01), "speed": 0.0})
             for k in range(0, 60, 5)]  # fmt: skip
    assert pub(van, password, f"fleet/{van}/gps", fixes).returncode == 0
    device = cli("keys", "create", "--role", "device", "--name", van)
    customer = cli("keys", "create", "--role", "customer")

    def post(key: str, body: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{api_url}/v1/pod", json=body,
                          headers={"Authorization": f"Bearer {key}"})  # fmt: skip

    at_stop = {"ts": (now + timedelta(seconds=10)).isoformat(), "tracking_number": near,
               "outcome": "delivered", "signed_by": "A. Smith"}  # fmt: skip
    r = post(device, at_stop)
    assert r.status_code == 202, r.text
    assert r.json()["vehicle_id"] == van
    # a second proof 1.1 km away (the van had driven on): delivered, and flagged
    away = {"ts": (now + timedelta(seconds=55)).isoformat(), "tracking_number": far,
            "outcome": "delivered"}  # fmt: skip
    assert post(device, away).status_code == 202
    assert post(device, {**at_stop, "tracking_number": f"POD{tag}-NONE"}).status_code == 404
    # another van's parcel is not this device's to deliver: answered as an unknown one
    other = post(device, {**at_stop, "tracking_number": f"{near}-2"})
    assert other.status_code == 404 and other.json() == post(
        device, {**at_stop, "tracking_number": f"POD{tag}-NONE"}).json()
    dispatcher = cli("keys", "create", "--role", "dispatcher")
    assert post(dispatcher, {**at_stop, "tracking_number": f"POD{tag}-NONE",
                             "vehicle_id": van}).status_code == 404
    assert post(device, {**at_stop, "outcome": "lost"}).status_code == 422
    assert post(customer, at_stop).status_code == 403

    def detail(tn: str) -> dict[str, Any] | None:
        row = db.execute("SELECT sub_status, detail FROM parcel_event WHERE tracking_number = %s"
                         " AND status = 'Delivered'", (tn,)).fetchone()  # fmt: skip
        return None if row is None else {"sub_status": row[0], **row[1]}

    wait_until(lambda: detail(near) is not None and detail(far) is not None, timeout=20,
               what="both proofs applied by ingest")  # fmt: skip
    assert detail(near) == {"sub_status": "Delivered_003", "evidence": "pod",
                            "signed_by": "A. Smith", "dist_m": 0.0}  # fmt: skip
    got = detail(far)
    assert got is not None and got["far_from_stop"] is True and float(got["dist_m"]) > 1000
    assert db.execute("SELECT count(*) FROM pod_inbox WHERE vehicle_id = %s AND processed_at"
                      " IS NOT NULL", (van,)).fetchone() == (2,)  # fmt: skip
    assert db.execute("SELECT count(*) FROM parcel_event WHERE tracking_number = %s",
                      (near,)).fetchone() == (1,)  # fmt: skip
