"""``GET /v1/parcels/{tracking_number}`` and ``GET /v1/parcels``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.deps import pool, require
from api.errors import ApiError
from api.keys import ApiKey
from ingest.webhooks import public_detail

router = APIRouter(prefix="/v1/parcels", tags=["parcels"])
TRACKING = r"^[A-Za-z0-9-]{6,40}$"
STATUSES = ("InfoReceived", "InTransit", "OutForDelivery", "AttemptFail", "Delivered",
            "Exception", "Expired")  # fmt: skip


class Position(BaseModel):
    lon: float
    lat: float
    time: datetime


class TimelineEvent(BaseModel):
    time: datetime
    status: str
    sub_status: str | None
    stop_id: str | None
    vehicle_id: str | None = Field(None, description="dispatchers only")
    detail: dict[str, Any] | None = None


class Parcel(BaseModel):
    tracking_number: str
    status: str = Field(description="AfterShip tag: " + ", ".join(STATUSES))
    sub_status: str | None
    updated: datetime
    stop_id: str | None
    stop_name: str | None
    promised_by: datetime | None
    eta: datetime | None
    eta_earliest: datetime | None
    eta_latest: datetime | None
    confidence: float | None
    vehicle_id: str | None = Field(None, description="dispatchers only")
    vehicle_position: Position | None = Field(None, description="dispatchers only")
    timeline: list[TimelineEvent]


class ParcelSummary(BaseModel):
    tracking_number: str
    status: str
    sub_status: str | None
    stop_id: str | None
    vehicle_id: str | None
    eta: datetime | None
    promised_by: datetime | None


class ParcelPage(BaseModel):
    parcels: list[ParcelSummary]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")


NOT_FOUND = ApiError(404, "not_found", "no such parcel")  # the same for unknown and hidden


@router.get("/{tracking_number}", response_model=Parcel, response_model_exclude_none=False,
            summary="Status, ETA window and timeline of one parcel")  # fmt: skip
async def get_parcel(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    key: Annotated[ApiKey, Depends(require("customer", "dispatcher"))],
    tracking_number: Annotated[str, Path(examples=["MP100200300"])],
) -> Parcel:
    if not re.fullmatch(TRACKING, tracking_number):
        raise NOT_FOUND
    dispatcher = key.role in ("dispatcher", "admin")
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT l.tracking_number, l.status, l.sub_status, l.time AS updated, p.stop_id,"
            " s.name AS stop_name, p.promised_by, l.eta, l.eta_earliest, l.eta_latest,"
            " l.eta_confidence AS confidence, l.vehicle_id, v.lon, v.lat, v.time AS vtime"
            " FROM parcel p JOIN parcel_latest l USING (tracking_number)"
            " LEFT JOIN stop s ON s.stop_id = p.stop_id"
            " LEFT JOIN vehicle_latest v ON v.vehicle_id = l.vehicle_id"
            " WHERE p.tracking_number = %s", (tracking_number,))  # fmt: skip
        row = await cur.fetchone()
        if row is None:
            raise NOT_FOUND
        await cur.execute(
            "SELECT time, status, sub_status, stop_id, vehicle_id, detail FROM parcel_event"
            " WHERE tracking_number = %s ORDER BY time", (tracking_number,))  # fmt: skip
        events = await cur.fetchall()
    lon, lat, vtime = row.pop("lon"), row.pop("lat"), row.pop("vtime")
    if not dispatcher:
        row["vehicle_id"] = None
        for e in events:
            e["vehicle_id"] = None
            e["detail"] = public_detail(e["detail"])
    position = Position(lon=lon, lat=lat, time=vtime) if dispatcher and lon is not None else None
    return Parcel(**row, vehicle_position=position,
                  timeline=[TimelineEvent(**e) for e in events])  # fmt: skip


@router.get("", response_model=ParcelPage, summary="Parcels, cursor-paginated")
async def list_parcels(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[ApiKey, Depends(require("dispatcher"))],
    status: Annotated[str | None, Query(description=", ".join(STATUSES))] = None,
    vehicle_id: Annotated[str | None, Query(
        description="the van's parcels: bound to it, or planned for it (its route serves"
                    " their stop) and bound to no van")] = None,
    stop_id: str | None = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ParcelPage:
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_request", f"status must be one of {', '.join(STATUSES)}")
    where, params = ["true"], []
    for column, value in (("l.status", status), ("p.stop_id", stop_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if vehicle_id is not None:  # bound to the van, or planned for it and bound to no van
        where.append("(l.vehicle_id = %s OR (l.vehicle_id IS NULL AND p.stop_id IN"
                     " (SELECT stop_id FROM route_stop WHERE vehicle_id = %s)))")
        params += [vehicle_id, vehicle_id]
    if cursor is not None:
        where.append("p.tracking_number > %s")
        params.append(cursor)
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT p.tracking_number, l.status, l.sub_status, p.stop_id, l.vehicle_id, l.eta,"
            " p.promised_by FROM parcel p JOIN parcel_latest l USING (tracking_number)"
            f" WHERE {' AND '.join(where)} ORDER BY p.tracking_number LIMIT %s",
            (*params, limit + 1),
        )  # fmt: skip
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return ParcelPage(parcels=[ParcelSummary(**r) for r in rows],
                      next_cursor=rows[-1]["tracking_number"] if more else None)  # fmt: skip
