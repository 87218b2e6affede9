"""The day's plan: validation with precise errors, and the statements that store it.

``parse_manifest(doc)`` checks structure and cross references and names the row and
field of every problem (``parcels[12].stop_id: no stop 'S-99'``). ``statements(m)``
turns a valid manifest into parameterised SQL that upserts it; running them twice
leaves the tables as after once (idempotent). The same statements serve
``milepost manifest load`` (sync) and ``PUT /v1/manifest`` (async).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from shapely.geometry import Polygon

HEX_EPC = r"^(?:[0-9A-Fa-f]{2}){2,62}$"
VEHICLE_ID = r"^[A-Za-z0-9_.-]{1,64}$"
TRACKING_NUMBER = r"^[A-Za-z0-9-]{6,40}$"


class ManifestError(ValueError):
    """An invalid manifest; ``problems`` lists every problem as "where: what"."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more"
                                              if len(problems) > 20 else "")  # fmt: skip
        super().__init__(f"invalid manifest: {shown}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointFence(_Model):
    type: Literal["Point"]
    coordinates: tuple[float, float]


class PolygonFence(_Model):
    type: Literal["Polygon"]
    coordinates: list[list[tuple[float, float]]] = Field(min_length=1)


class Stop(_Model):
    stop_id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Literal["delivery", "hub", "dock"]
    name: str | None = None
    geofence: PointFence | PolygonFence = Field(discriminator="type")
    radius_m: Annotated[float, Field(gt=0, le=10_000)] | None = None
    hub_stop_id: str | None = None  # a dock's hub

    @field_validator("geofence")
    @classmethod
    def _geometry(cls, g: PointFence | PolygonFence) -> PointFence | PolygonFence:
        points = [g.coordinates] if isinstance(g, PointFence) else [p for r in g.coordinates
                                                                     for p in r]  # fmt: skip
        for lon, lat in points:
            if not (math.isfinite(lon) and math.isfinite(lat)
                    and -180 <= lon <= 180 and -90 <= lat <= 90):  # fmt: skip
                raise ValueError(f"coordinate ({lon}, {lat}) is not a WGS84 lon, lat")
        if isinstance(g, PolygonFence):
            for k, ring in enumerate(g.coordinates):
                if len(ring) < 4 or ring[0] != ring[-1]:
                    raise ValueError(f"ring {k} must be closed and have at least 4 positions")
            poly = Polygon(g.coordinates[0], g.coordinates[1:])
            if not poly.is_valid:
                from shapely.validation import explain_validity

                raise ValueError(f"polygon is not valid: {explain_validity(poly)}")
        return g


class Vehicle(_Model):
    vehicle_id: Annotated[str, Field(pattern=VEHICLE_ID)]
    epc: Annotated[str, Field(pattern=HEX_EPC)] | None = None


class Gate(_Model):
    gate_id: Annotated[str, Field(min_length=1, max_length=64)]
    dock_stop_id: str
    url: Annotated[str, Field(min_length=1)]
    protocol: Literal["mercury", "chafon18", "chafon288", "ascii"]
    baud: Annotated[int, Field(gt=0, le=4_000_000)] = 115200
    antennas: dict[Annotated[str, Field(pattern=r"^[0-9]{1,2}$")], Literal["hall", "dock"]] = {}


class Parcel(_Model):
    tracking_number: Annotated[str, Field(pattern=TRACKING_NUMBER)]
    epc: Annotated[str, Field(pattern=HEX_EPC)] | None = None
    stop_id: str
    promised_by: datetime | None = None
    # cold chain: the range the parcel must stay in while aboard (either end optional)
    temp_min_c: Annotated[float, Field(ge=-100, le=100)] | None = None
    temp_max_c: Annotated[float, Field(ge=-100, le=100)] | None = None

    @field_validator("promised_by")
    @classmethod
    def _aware(cls, t: datetime | None) -> datetime | None:
        if t is not None and t.tzinfo is None:
            raise ValueError("needs a UTC offset (RFC 3339)")
        return t

    @model_validator(mode="after")
    def _range(self) -> Parcel:
        lo, hi = self.temp_min_c, self.temp_max_c
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"temp_min_c ({lo}) is above temp_max_c ({hi})")
        return self


class Route(_Model):
    vehicle_id: Annotated[str, Field(pattern=VEHICLE_ID)]
    hub_stop_id: str
    stop_ids: list[str]


class Manifest(_Model):
    stops: list[Stop] = []
    vehicles: list[Vehicle] = []
    gates: list[Gate] = []
    parcels: list[Parcel] = []
    routes: list[Route] = []


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("PointFence", "PolygonFence", "Point", "Polygon"):
            out += ("." if out else "") + str(part)
    return out


def parse_manifest(
    doc: bytes | str | dict[str, Any],
    stored_stops: Mapping[str, str] | None = None,
    stored_vehicles: AbstractSet[str] = frozenset(),
) -> Manifest:
    """Validate a manifest document; raise ManifestError naming every problem.

    References (a gate's dock, a parcel's stop, a route's vehicle and stops) resolve
    against the manifest first, then against what is stored already: ``stored_stops``
    (stop_id -> kind) and ``stored_vehicles``.
    """
    if isinstance(doc, bytes | str):
        try:
            doc = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise ManifestError([f"not JSON: {exc}"]) from exc
    if not isinstance(doc, dict):
        raise ManifestError(["the manifest must be a JSON object"])
    try:
        m = Manifest.model_validate(doc)
    except ValidationError as exc:
        raise ManifestError([f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]) from exc
    problems: list[str] = []

    def unique(kind: str, ids: list[str]) -> None:
        seen: dict[str, int] = {}
        for i, x in enumerate(ids):
            if x in seen:
                problems.append(f"{kind}[{i}]: duplicate id {x!r} (also {kind}[{seen[x]}])")
            seen.setdefault(x, i)

    unique("stops", [s.stop_id for s in m.stops])
    unique("vehicles", [v.vehicle_id for v in m.vehicles])
    unique("gates", [g.gate_id for g in m.gates])
    unique("parcels", [p.tracking_number for p in m.parcels])
    unique("routes", [r.vehicle_id for r in m.routes])
    epcs: dict[str, str] = {}
    tagged = [("vehicles", i, v.epc) for i, v in enumerate(m.vehicles)] + [
        ("parcels", i, p.epc) for i, p in enumerate(m.parcels)]
    for kind, i, epc in tagged:
        if epc is not None:
            key = epc.upper()
            if key in epcs:
                problems.append(f"{kind}[{i}].epc: {epc} is also {epcs[key]}")
            epcs[key] = f"{kind}[{i}]"
    kinds = {**(stored_stops or {}), **{s.stop_id: s.kind for s in m.stops}}

    def ref(where: str, stop_id: str, want: str) -> None:
        if stop_id not in kinds:
            problems.append(f"{where}: no stop {stop_id!r} in this manifest or stored")
        elif kinds[stop_id] != want:
            problems.append(f"{where}: stop {stop_id!r} is a {kinds[stop_id]}, not a {want}")

    for i, s in enumerate(m.stops):
        if isinstance(s.geofence, PointFence) and s.radius_m is None:
            problems.append(f"stops[{i}].radius_m: a Point geofence needs radius_m")
        if s.hub_stop_id is not None:
            ref(f"stops[{i}].hub_stop_id", s.hub_stop_id, "hub")
    for i, g in enumerate(m.gates):
        ref(f"gates[{i}].dock_stop_id", g.dock_stop_id, "dock")
    for i, p in enumerate(m.parcels):
        ref(f"parcels[{i}].stop_id", p.stop_id, "delivery")
    vehicles = set(stored_vehicles) | {v.vehicle_id for v in m.vehicles}
    for i, r in enumerate(m.routes):
        if r.vehicle_id not in vehicles:
            problems.append(f"routes[{i}].vehicle_id: no vehicle {r.vehicle_id!r}"
                            " in this manifest or stored")  # fmt: skip
        ref(f"routes[{i}].hub_stop_id", r.hub_stop_id, "hub")
        for k, stop_id in enumerate(r.stop_ids):
            ref(f"routes[{i}].stop_ids[{k}]", stop_id, "delivery")
        dup = {x for x, n in Counter(r.stop_ids).items() if n > 1}  # list.count: quadratic
        if dup:
            problems.append(f"routes[{i}].stop_ids: {sorted(dup)} listed twice")
    if problems:
        raise ManifestError(problems)
    return m


Statement = tuple[str, tuple[Any, ...]]


def statements(m: Manifest) -> list[Statement]:
    """Parameterised upserts that store ``m``; the same result however often they run."""
    out: list[Statement] = []
    for s in m.stops:
        out.append((
            "INSERT INTO stop (stop_id, kind, name, geofence, radius_m, hub_stop_id)"
            " VALUES (%s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT (stop_id) DO UPDATE SET"
            " kind = excluded.kind, name = excluded.name, geofence = excluded.geofence,"
            " radius_m = excluded.radius_m, hub_stop_id = excluded.hub_stop_id",
            (s.stop_id, s.kind, s.name, orjson.dumps(s.geofence.model_dump()).decode(),
             s.radius_m, s.hub_stop_id),
        ))  # fmt: skip
    for v in m.vehicles:
        out.append((
            "INSERT INTO vehicle (vehicle_id, epc) VALUES (%s, %s) ON CONFLICT (vehicle_id)"
            " DO UPDATE SET epc = excluded.epc",
            (v.vehicle_id, v.epc.upper() if v.epc else None),
        ))  # fmt: skip
    for g in m.gates:
        out.append((
            "INSERT INTO gate (gate_id, dock_stop_id, url, protocol, baud, antennas)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (gate_id) DO UPDATE SET"
            " dock_stop_id = excluded.dock_stop_id, url = excluded.url,"
            " protocol = excluded.protocol, baud = excluded.baud, antennas = excluded.antennas,"
            " updated_at = CASE WHEN (gate.dock_stop_id, gate.url, gate.protocol, gate.baud,"
            " gate.antennas) IS DISTINCT FROM (excluded.dock_stop_id, excluded.url,"
            " excluded.protocol, excluded.baud, excluded.antennas) THEN now()"
            " ELSE gate.updated_at END",
            (g.gate_id, g.dock_stop_id, g.url, g.protocol, g.baud,
             orjson.dumps(dict(sorted(g.antennas.items()))).decode()),
        ))  # fmt: skip
    for p in m.parcels:
        out.append((
            "INSERT INTO parcel (tracking_number, epc, stop_id, promised_by, temp_min_c,"
            " temp_max_c) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tracking_number)"
            " DO UPDATE SET epc = excluded.epc, stop_id = excluded.stop_id,"
            " promised_by = excluded.promised_by, temp_min_c = excluded.temp_min_c,"
            " temp_max_c = excluded.temp_max_c",
            (p.tracking_number, p.epc.upper() if p.epc else None, p.stop_id, p.promised_by,
             p.temp_min_c, p.temp_max_c),
        ))  # fmt: skip
        out.append((
            "INSERT INTO parcel_latest (tracking_number, time, status, stop_id)"
            " VALUES (%s, now(), 'InfoReceived', %s) ON CONFLICT (tracking_number) DO NOTHING",
            (p.tracking_number, p.stop_id),
        ))  # fmt: skip
    for r in m.routes:
        out.append((
            "INSERT INTO route (vehicle_id, hub_stop_id) VALUES (%s, %s)"
            " ON CONFLICT (vehicle_id) DO UPDATE SET hub_stop_id = excluded.hub_stop_id",
            (r.vehicle_id, r.hub_stop_id),
        ))  # fmt: skip
        out.append(("DELETE FROM route_stop WHERE vehicle_id = %s", (r.vehicle_id,)))
        for seq, stop_id in enumerate(r.stop_ids):
            out.append((
                "INSERT INTO route_stop (vehicle_id, seq, stop_id) VALUES (%s, %s, %s)",
                (r.vehicle_id, seq, stop_id),
            ))  # fmt: skip
    # delivered on commit: a running ingest reloads at once (ingest.service.Ingest.run_plan)
    out.append((f"NOTIFY {MANIFEST_CHANNEL}", ()))
    return out


def summary(m: Manifest) -> dict[str, int]:
    return {k: len(getattr(m, k)) for k in ("stops", "vehicles", "gates", "parcels", "routes")}


MANIFEST_CHANNEL = "milepost_manifest"
STORED_STOPS_SQL = "SELECT stop_id, kind FROM stop"
STORED_VEHICLES_SQL = "SELECT vehicle_id FROM vehicle"
