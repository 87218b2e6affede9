"""``GET /v1/vehicles`` and ``GET /v1/vehicles/{vehicle_id}/track``."""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.deps import db_pool, pool, read_connection, require
from api.errors import ApiError
from api.live import LiveHub
from api.responses import JSON, JsonResponse

router = APIRouter(prefix="/v1/vehicles", tags=["vehicles"])
_dispatcher = require("dispatcher")
dispatcher = Depends(_dispatcher)

SILENT_AFTER_S = 300.0
MOVING_MPS = 1.0
MAX_TRACK_POINTS = 10_000


class Vehicle(BaseModel):
    vehicle_id: str
    time: datetime = Field(description="time of the newest fix (device time)")
    lon: float
    lat: float
    speed_mps: float | None
    heading_deg: float | None
    acc_m: float | None
    motion: str = Field(description="driving | stopped | at_stop | at_hub | silent")
    stop_id: str | None = Field(description="the stop whose geofence holds the vehicle")
    age_s: float = Field(description="seconds since the newest fix")


class VehicleList(BaseModel):
    vehicles: list[Vehicle]
    count: int


class TrackPoint(BaseModel):
    time: datetime
    lon: float
    lat: float
    speed_mps: float | None
    heading_deg: float | None


class Track(BaseModel):
    vehicle_id: str
    start: datetime
    end: datetime
    bucket_s: float | None
    points: list[TrackPoint]
    next_cursor: str | None = Field(
        description="pass as start= to get the points after this page; null on the last page"
    )


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        w, s, e, n = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise ApiError(422, "invalid_request", "bbox must be minLon,minLat,maxLon,maxLat") from exc
    if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
        raise ApiError(422, "invalid_request", "bbox out of range or inverted")
    return w, s, e, n


def vehicle_json(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The ``VehicleList`` document of the rows, as the models would dump it (their fields,
    in order: checked at import), without a model and its validation per vehicle: for a
    fleet of 2,000 those cost more than the query."""
    out = []
    for vid, t, lon, lat, speed, heading, acc, stop_kind, stop_id, age in rows:
        motion = ("silent" if age > SILENT_AFTER_S
                  else "at_hub" if stop_kind in ("hub", "dock")
                  else "at_stop" if stop_kind == "delivery"
                  else "driving" if (speed or 0.0) >= MOVING_MPS else "stopped")  # fmt: skip
        out.append({"vehicle_id": vid, "time": t, "lon": lon, "lat": lat, "speed_mps": speed,
                    "heading_deg": heading, "acc_m": acc, "motion": motion, "stop_id": stop_id,
                    "age_s": round(age, 3)})  # fmt: skip
    return {"vehicles": out, "count": len(out)}


_sample = vehicle_json([("V", None, 0.0, 0.0, None, None, None, None, None, 0.0)])
if (tuple(_sample) != tuple(VehicleList.model_fields)
        or tuple(_sample["vehicles"][0]) != tuple(Vehicle.model_fields)):  # fmt: skip
    raise RuntimeError("vehicle_json's keys must be VehicleList's and Vehicle's fields, in order")


_LIST_SQL = ("SELECT v.vehicle_id, v.time, v.lon, v.lat, v.speed_mps, v.heading_deg, v.acc_m,"
             " s.kind, v.stop_id, extract(epoch FROM now() - v.time)::float8"
             " FROM vehicle_latest v LEFT JOIN stop s ON s.stop_id = v.stop_id")  # fmt: skip


async def _list_rows(p: AsyncConnectionPool, where: str = "",
                     params: tuple[float, ...] = ()) -> list[tuple[Any, ...]]:  # fmt: skip
    # binary results: no float and timestamp text to format on the server and parse here
    async with read_connection(p) as conn, conn.cursor(binary=True) as cur:
        await cur.execute(_LIST_SQL + where + " ORDER BY v.vehicle_id", params)
        return await cur.fetchall()


class FleetSnapshot:
    """The whole fleet's list, encoded once and shared by every request until it changes.

    Building it for 2,000 vans takes milliseconds of CPU, more than sending it; a
    dispatcher's map asks for it often and the answer is the same for everyone. It is
    rebuilt when the live hub has heard of a new position since it was built (ingest
    notifies in the transaction that moves ``vehicle_latest``), at most every
    ``MIN_INTERVAL_S``, and at least every ``MAX_AGE_S`` (``age_s`` and ``motion`` age);
    while the hub is not listening it is rebuilt every ``MIN_INTERVAL_S``. One request
    rebuilds it while the others wait for that one build.
    """

    MIN_INTERVAL_S: Final = 0.25
    MAX_AGE_S: Final = 1.0

    def __init__(self) -> None:
        self._body: bytes | None = None
        self._built = -math.inf
        self._version = -1
        self._lock = asyncio.Lock()

    def _fresh(self, hub: LiveHub, now: float) -> bool:
        age = now - self._built
        return age < self.MIN_INTERVAL_S or (
            age < self.MAX_AGE_S and hub.connected and hub.positions_version == self._version)

    async def body(self, p: AsyncConnectionPool, hub: LiveHub) -> bytes:
        body = self._body
        if body is None or not self._fresh(hub, time.monotonic()):
            async with self._lock:
                body = self._body  # another request may have built it meanwhile
                if body is None or not self._fresh(hub, time.monotonic()):
                    version = hub.positions_version  # a position after this: stale again
                    body = JsonResponse.encode(vehicle_json(await _list_rows(p)))
                    self._body, self._built, self._version = body, time.monotonic(), version
        return body


@router.get("", response_model=VehicleList, summary="Latest position of every vehicle",
            description="Without `bbox`, the whole fleet's list is shared by all requests and"
                        " rebuilt when a position arrives, at most every"
                        f" {FleetSnapshot.MIN_INTERVAL_S:g} s and at least every"
                        f" {FleetSnapshot.MAX_AGE_S:g} s (`age_s` is as of then).")  # fmt: skip
async def list_vehicles(
    request: Request,
    p: Annotated[AsyncConnectionPool, Depends(db_pool)],
    _key: Annotated[object, dispatcher],
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat",
                                      examples=["13.3,52.4,13.5,52.6"])] = None,
) -> Response:
    # served by list_vehicles_fast (see there); this route gives the OpenAPI document
    return await vehicles_answer(request, p, bbox)


async def list_vehicles_fast(request: Request) -> Response:
    """``list_vehicles`` as a plain endpoint, served before the FastAPI stack (``api.app``): the
    same answer, without FastAPI's dependency resolution and parameter validation."""
    await _dispatcher(request)
    return await vehicles_answer(request, pool(request), request.query_params.get("bbox"))


async def vehicles_answer(request: Request, p: AsyncConnectionPool, bbox: str | None) -> Response:
    box = _bbox(bbox)
    if box is None:
        snapshot: FleetSnapshot = request.state.fleet
        return Response(await snapshot.body(p, request.state.live), media_type=JSON)
    rows = await _list_rows(p, " WHERE v.lon BETWEEN %s AND %s AND v.lat BETWEEN %s AND %s",
                            (box[0], box[2], box[1], box[3]))  # fmt: skip
    return JsonResponse(vehicle_json(rows))


_BUCKET = re.compile(r"^(\d+)(ms|s|m|h)$")


def parse_bucket(text: str) -> timedelta:
    m = _BUCKET.match(text)
    if not m:
        raise ApiError(422, "invalid_request", "bucket must look like 500ms, 30s, 5m or 1h")
    n, unit = int(m.group(1)), m.group(2)
    delta = {"ms": timedelta(milliseconds=n), "s": timedelta(seconds=n),
             "m": timedelta(minutes=n), "h": timedelta(hours=n)}[unit]  # fmt: skip
    if delta <= timedelta(0):
        raise ApiError(422, "invalid_request", "bucket must be positive")
    return delta


@router.get("/{vehicle_id}/track", response_model=Track, summary="Fixes of one vehicle")
async def track(
    p: Annotated[AsyncConnectionPool, Depends(db_pool)],
    _key: Annotated[object, dispatcher],
    vehicle_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
    start: Annotated[datetime | None, Query(description="RFC 3339; default: end - 1 h")] = None,
    end: Annotated[datetime | None, Query(description="RFC 3339; default: now")] = None,
    bucket: Annotated[str | None, Query(description="downsample, e.g. 30s or 5m",
                                        examples=["1m"])] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TRACK_POINTS)] = 5000,
) -> Track:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=1)
    for t in (start, end):
        if t.tzinfo is None:
            raise ApiError(422, "invalid_request", "start and end need a UTC offset")
    if start > end:
        raise ApiError(422, "invalid_request", "start is after end")
    step = parse_bucket(bucket) if bucket else None
    async with p.connection() as conn:
        exists = await conn.execute(
            "SELECT 1 FROM vehicle_latest WHERE vehicle_id = %s"
            " UNION ALL SELECT 1 FROM vehicle WHERE vehicle_id = %s LIMIT 1",
            (vehicle_id, vehicle_id),
        )
        if await exists.fetchone() is None:
            raise ApiError(404, "not_found", f"no vehicle {vehicle_id!r}")
        if step is None:
            cur = await conn.execute(
                "SELECT time, lon, lat, speed_mps, heading_deg FROM gps_fix"
                " WHERE vehicle_id = %s AND time >= %s AND time <= %s"
                " ORDER BY time LIMIT %s",
                (vehicle_id, start, end, limit + 1),
            )
        else:
            cur = await conn.execute(
                "SELECT time_bucket(%s, time) AS b, last(lon, time), last(lat, time),"
                " avg(speed_mps), last(heading_deg, time) FROM gps_fix"
                " WHERE vehicle_id = %s AND time >= %s AND time <= %s"
                " GROUP BY b ORDER BY b LIMIT %s",
                (step, vehicle_id, start, end, limit + 1),
            )
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    points = [TrackPoint(time=r[0], lon=r[1], lat=r[2], speed_mps=r[3], heading_deg=r[4])
              for r in rows]  # fmt: skip
    cursor = None
    if more:
        last = rows[-1][0] + (step or timedelta(microseconds=1))
        cursor = last.isoformat()
    return Track(vehicle_id=vehicle_id, start=start, end=end,
                 bucket_s=step.total_seconds() if step else None, points=points,
                 next_cursor=cursor)  # fmt: skip
