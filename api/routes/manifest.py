"""``PUT /v1/manifest``: the day's plan, validated and stored in one transaction."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from api.deps import pool, require
from api.errors import ApiError
from ingest import manifest as mf

router = APIRouter(prefix="/v1/manifest", tags=["manifest"])

EXAMPLE: dict[str, Any] = {
    "stops": [
        {"stop_id": "HUB-1", "kind": "hub", "name": "Hub Berlin-Mitte",
         "geofence": {"type": "Polygon", "coordinates": [[[13.400, 52.518], [13.404, 52.518],
                                                          [13.404, 52.521], [13.400, 52.518]]]}},
        {"stop_id": "DOCK-3", "kind": "dock", "hub_stop_id": "HUB-1",
         "geofence": {"type": "Point", "coordinates": [13.4021, 52.5190]}, "radius_m": 8},
        {"stop_id": "S-17", "kind": "delivery", "name": "12 Elm St",
         "geofence": {"type": "Point", "coordinates": [13.4050, 52.5200]}, "radius_m": 40},
    ],
    "vehicles": [{"vehicle_id": "VAN-0042", "epc": "3154257BF4499602D2000000"}],
    "gates": [{"gate_id": "G-3", "dock_stop_id": "DOCK-3", "url": "/dev/ttyUSB0",
               "protocol": "mercury", "baud": 115200, "antennas": {"1": "hall", "2": "dock"}}],
    "parcels": [{"tracking_number": "MP100200300", "epc": "3074257BF7194E4000001A85",
                 "stop_id": "S-17", "promised_by": "2026-11-24T18:00:00Z"}],
    "routes": [{"vehicle_id": "VAN-0042", "hub_stop_id": "HUB-1", "stop_ids": ["S-17"]}],
}  # fmt: skip
# a day's plan for a large depot (100,000 parcels) is some 20 MB of JSON
MAX_BYTES: Final = 64 << 20


class ManifestSummary(BaseModel):
    stops: int
    vehicles: int
    gates: int
    parcels: int
    routes: int


@router.put("", response_model=ManifestSummary, summary="Load the day's plan (idempotent)",
            responses={422: {"description": "invalid manifest: every problem with its row"
                                            " and field"},
                       413: {"description": f"a manifest over {MAX_BYTES >> 20} MiB"}})  # fmt: skip
async def put_manifest(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[object, Depends(require("dispatcher"))],
    doc: Annotated[dict[str, Any], Body(openapi_examples={"day": {"value": EXAMPLE}})],
) -> ManifestSummary:
    async with p.connection() as conn:
        cur = await conn.execute(mf.STORED_STOPS_SQL)
        stops: dict[str, str] = dict(await cur.fetchall())
        vehicles = {r[0] for r in await (await conn.execute(mf.STORED_VEHICLES_SQL)).fetchall()}
        try:
            m = mf.parse_manifest(doc, stops, vehicles)
        except mf.ManifestError as exc:
            raise ApiError(422, "invalid_manifest", "; ".join(exc.problems)) from exc
        async with conn.transaction():
            for sql, params in mf.statements(m):
                await conn.execute(sql, params)
    return ManifestSummary(**mf.summary(m))


class StoredStop(BaseModel):
    stop_id: str
    kind: str
    name: str | None
    geofence: dict[str, Any]
    radius_m: float | None
    hub_stop_id: str | None


class StoredRoute(BaseModel):
    vehicle_id: str
    hub_stop_id: str
    stop_ids: list[str]


class StoredGate(BaseModel):
    gate_id: str
    dock_stop_id: str
    protocol: str


class StoredPlan(BaseModel):
    stops: list[StoredStop]
    routes: list[StoredRoute]
    gates: list[StoredGate]
    vehicles: list[str]
    parcels: int


@router.get("", response_model=StoredPlan, summary="The stored plan: stops with their"
            " geofences, routes, gates and vehicles (parcels: see /v1/parcels)")
async def get_manifest(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[object, Depends(require("dispatcher"))],
) -> StoredPlan:
    async with p.connection() as conn:
        stops = await (await conn.execute(
            "SELECT stop_id, kind, name, geofence, radius_m, hub_stop_id FROM stop"
            " ORDER BY stop_id")).fetchall()  # fmt: skip
        routes = await (await conn.execute(
            "SELECT r.vehicle_id, r.hub_stop_id, coalesce(array_agg(s.stop_id ORDER BY s.seq)"
            " FILTER (WHERE s.stop_id IS NOT NULL), '{}') FROM route r"
            " LEFT JOIN route_stop s USING (vehicle_id) GROUP BY 1, 2 ORDER BY 1")).fetchall()
        gates = await (await conn.execute(
            "SELECT gate_id, dock_stop_id, protocol FROM gate ORDER BY gate_id")).fetchall()
        vehicles = await (await conn.execute(
            "SELECT vehicle_id FROM vehicle ORDER BY vehicle_id")).fetchall()
        parcels = await (await conn.execute("SELECT count(*) FROM parcel")).fetchone()
    return StoredPlan(
        stops=[StoredStop(stop_id=r[0], kind=r[1], name=r[2], geofence=r[3], radius_m=r[4],
                          hub_stop_id=r[5]) for r in stops],
        routes=[StoredRoute(vehicle_id=r[0], hub_stop_id=r[1], stop_ids=list(r[2]))
                for r in routes],
        gates=[StoredGate(gate_id=r[0], dock_stop_id=r[1], protocol=r[2]) for r in gates],
        vehicles=[r[0] for r in vehicles], parcels=int(parcels[0]) if parcels else 0)
