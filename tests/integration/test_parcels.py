"""Parcels by tracking number (customer and dispatcher) and the paginated list."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import httpx


def test_parcel_by_number_and_list(api_url: str, cli: Callable[..., str], tmp_path: Path) -> None:
    tag = secrets.token_hex(3).upper()
    stop = f"S-{tag}"
    numbers = [f"MP{tag}{i:03d}" for i in range(5)]
    doc = {"stops": [{"stop_id": stop, "kind": "delivery", "name": "1 Test Way", "radius_m": 30,
                      "geofence": {"type": "Point", "coordinates": [13.41, 52.52]}}],
           "parcels": [{"tracking_number": n, "stop_id": stop,
                        "promised_by": "2026-11-24T18:00:00+01:00"} for n in numbers]}  # fmt: skip
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    cli("manifest", "load", str(path))
    customer = {"Authorization": f"Bearer {cli('keys', 'create', '--role', 'customer')}"}
    dispatcher = {"Authorization": f"Bearer {cli('keys', 'create', '--role', 'dispatcher')}"}

    r = httpx.get(f"{api_url}/v1/parcels/{numbers[0]}", headers=customer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["stop_id"], body["stop_name"]) == ("InfoReceived", stop,
                                                                      "1 Test Way")  # fmt: skip
    assert body["promised_by"] == "2026-11-24T17:00:00Z"
    assert body["vehicle_position"] is None and body["vehicle_id"] is None

    # unknown and malformed numbers answer exactly alike: nothing to enumerate
    a = httpx.get(f"{api_url}/v1/parcels/MP{tag}999", headers=customer)
    b = httpx.get(f"{api_url}/v1/parcels/x", headers=customer)
    assert a.status_code == b.status_code == 404 and a.json() == b.json()
    # a customer key cannot list parcels
    assert httpx.get(f"{api_url}/v1/parcels", headers=customer).status_code == 403

    seen: list[str] = []
    cursor = None
    while True:
        params = {"stop_id": stop, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{api_url}/v1/parcels", params=params, headers=dispatcher).json()
        seen += [p["tracking_number"] for p in page["parcels"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers
    r = httpx.get(f"{api_url}/v1/parcels", params={"status": "Lost"}, headers=dispatcher)
    assert r.status_code == 422
