"""The manifest of a simulated day: the scenario's hub, docks, stops, vans, gates, parcels
and routes, in the format of DESIGN.md, so `milepost simulate` drives a real plan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from simulators.gates import GateSpec, parcel_epcs
from simulators.scenario import Scenario

HUB_HALF_M = 60.0
DOCK_RADIUS_M = 8.0
STOP_RADIUS_M = 35.0
VAN_COMPANY_PREFIX = "0614141"


def _lonlat(s: Scenario, x_m: float, y_m: float) -> list[float]:
    lon, lat = s.to_lonlat(np.array([x_m]), np.array([y_m]))
    return [round(float(lon[0]), 7), round(float(lat[0]), 7)]


def gate_specs(n: int, protocols: Sequence[str] = ("mercury", "chafon288", "ascii")
               ) -> list[GateSpec]:  # fmt: skip
    return [GateSpec(f"G-{i + 1}", protocols[i % len(protocols)], {1: "hall", 2: "dock"},
                     dock_stop_id=f"DOCK-{i + 1}") for i in range(n)]  # fmt: skip


def scenario_manifest(
    s: Scenario, gates: Sequence[GateSpec], gate_urls: dict[str, str], *,
    parcels_per_stop: int = 2, day: datetime | None = None,
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """The day's manifest and the parcel EPCs (in manifest order) for the gate simulator."""
    rng = np.random.default_rng(s.seed + 7)
    day = day or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    h = HUB_HALF_M
    ring = [_lonlat(s, x, y) for x, y in ((-h, -h), (h, -h), (h, h), (-h, h), (-h, -h))]
    stops: list[dict[str, Any]] = [{"stop_id": "HUB-1", "kind": "hub", "name": "Hub",
                                    "geofence": {"type": "Polygon", "coordinates": [ring]}}]
    docks = max(len(gates), 1)
    for k in range(docks):
        x = -h + (k + 1) * 2 * h / (docks + 1)
        stops.append({"stop_id": f"DOCK-{k + 1}", "kind": "dock", "hub_stop_id": "HUB-1",
                      "geofence": {"type": "Point", "coordinates": _lonlat(s, x, -h + 5)},
                      "radius_m": DOCK_RADIUS_M})  # fmt: skip
    vehicles: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    parcels: list[dict[str, Any]] = []
    seen: dict[tuple[float, float], str] = {}
    n_parcels = sum(len(p.stops_m) for p in s.plans) * parcels_per_stop
    epcs = parcel_epcs(rng, n_parcels + len(s.plans))
    van_epcs, parcel_tags = epcs[: len(s.plans)], iter(epcs[len(s.plans):])
    for v, plan in enumerate(s.plans):
        vehicles.append({"vehicle_id": plan.vehicle_id, "epc": van_epcs[v]})
        stop_ids = []
        for x, y in plan.stops_m.tolist():
            key = (x, y)
            if key not in seen:
                seen[key] = f"S-{len(seen) + 1:04d}"
                stops.append({"stop_id": seen[key], "kind": "delivery",
                              "name": f"{abs(int(x)) // 150} Grid St {abs(int(y)) // 150}",
                              "geofence": {"type": "Point", "coordinates": _lonlat(s, x, y)},
                              "radius_m": STOP_RADIUS_M})  # fmt: skip
            if seen[key] in stop_ids:
                continue
            stop_ids.append(seen[key])
            for _ in range(parcels_per_stop):
                promised = day + timedelta(hours=float(rng.uniform(12, 20)))
                parcels.append({"tracking_number": f"MP{len(parcels) + 1:09d}",
                                "epc": next(parcel_tags), "stop_id": seen[key],
                                "promised_by": promised.isoformat()})  # fmt: skip
        routes.append({"vehicle_id": plan.vehicle_id, "hub_stop_id": "HUB-1",
                       "stop_ids": stop_ids})  # fmt: skip
    gate_entries = [g.manifest_entry(gate_urls[g.gate_id]) for g in gates]
    manifest = {"stops": stops, "vehicles": vehicles, "gates": gate_entries,
                "parcels": parcels, "routes": routes}  # fmt: skip
    return manifest, [p["epc"] for p in parcels]
