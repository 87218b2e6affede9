"""Loading the day's plan through the CLI and the API; idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.ingest.test_manifest import GOOD
from tests.integration.conftest import ROOT

TABLES = ("stop", "vehicle", "gate", "parcel", "route", "route_stop", "parcel_latest")


def snapshot(db: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}


def test_manifest_load_twice_changes_nothing(
    cli: Callable[..., str], db: psycopg.Connection, tmp_path: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "day.json"
    path.write_text(json.dumps(GOOD))
    cli("manifest", "load", str(path))
    first = snapshot(db)
    assert [r[0] for r in first["route_stop"] if r[0] == "VAN-0042"] == ["VAN-0042"] * 2
    assert any(r[0] == "MP100200300" and r[2] == "InfoReceived" for r in first["parcel_latest"])
    cli("manifest", "load", str(path))
    assert snapshot(db) == first

    bad = dict(GOOD, parcels=[{"tracking_number": "MP100200300", "stop_id": "S-404"}])
    path.write_text(json.dumps(bad))
    out = subprocess.run([sys.executable, "-m", "milepost", "manifest", "load", str(path)],
                         cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0
    assert "parcels[0].stop_id: no stop 'S-404' in this manifest or stored" in out.stderr
    assert snapshot(db) == first  # nothing half-stored


def test_put_manifest(api_url: str, cli: Callable[..., str], db: psycopg.Connection) -> None:
    key = cli("keys", "create", "--role", "dispatcher")
    auth = {"Authorization": f"Bearer {key}"}
    doc = json.loads(json.dumps(GOOD))
    doc["routes"][0]["stop_ids"] = ["S-18", "S-17"]
    r = httpx.put(f"{api_url}/v1/manifest", json=doc, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"stops": 4, "vehicles": 1, "gates": 1, "parcels": 1, "routes": 1}
    order = db.execute("SELECT stop_id FROM route_stop WHERE vehicle_id = 'VAN-0042'"
                       " ORDER BY seq").fetchall()  # fmt: skip
    assert [o[0] for o in order] == ["S-18", "S-17"]
    r = httpx.put(f"{api_url}/v1/manifest", json={"gates": [{"gate_id": "G-9"}]}, headers=auth)
    assert r.status_code == 422
    assert "gates[0].dock_stop_id: Field required" in r.json()["error"]["message"]
    customer = cli("keys", "create", "--role", "customer")
    r = httpx.put(f"{api_url}/v1/manifest", json=doc,
                  headers={"Authorization": f"Bearer {customer}"})  # fmt: skip
    assert r.status_code == 403
