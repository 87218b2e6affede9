"""``GET /v1/parcels/{tracking_number}`` and ``GET /v1/parcels``."""

from __future__ import annotations

import re
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.coalesce import Coalescer
from api.deps import KEY_COLUMNS, Bearer, bearer, db_pool, key_join, require
from api.errors import ApiError
from api.keys import ApiKey
from api.responses import JsonResponse
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
_TRACKING = re.compile(TRACKING)
_customer_or_dispatcher = bearer("customer", "dispatcher")

# one statement for a batch of lookups (api.coalesce): per lookup, numbered i from 1, the
# caller's key (see deps.Bearer), and the parcel, its stop, its van's position and its
# events, one row per event (one row of NULLs after the key when the parcel is unknown,
# one with NULL event columns when it has no events)
_PARCELS_SQL = (
    f"SELECT q.i, {', '.join(KEY_COLUMNS)}, l.tracking_number, l.status, l.sub_status, l.time,"
    " p.stop_id, s.name, p.promised_by, l.eta, l.eta_earliest, l.eta_latest,"
    " l.eta_confidence, l.vehicle_id, v.lon, v.lat, v.time,"
    " e.time, e.status, e.sub_status, e.stop_id, e.vehicle_id, e.detail"
    " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(prefix, number, i)"
    f" {key_join('q.prefix')}"
    " LEFT JOIN (parcel p JOIN parcel_latest l USING (tracking_number))"
    " ON p.tracking_number = q.number"
    " LEFT JOIN stop s ON s.stop_id = p.stop_id"
    " LEFT JOIN vehicle_latest v ON v.vehicle_id = l.vehicle_id"
    " LEFT JOIN parcel_event e ON e.tracking_number = p.tracking_number"
    " ORDER BY q.i, e.time"
)
_KEY = 1 + len(KEY_COLUMNS)  # the lookup's number and the key's columns come first
_PARCEL_FIELDS = tuple(Parcel.model_fields)
_EVENT_FIELDS = tuple(TimelineEvent.model_fields)
_POSITION_FIELDS = tuple(Position.model_fields)


def parcel_json(rows: list[tuple[Any, ...]], dispatcher: bool) -> dict[str, Any]:
    """The ``Parcel`` document of one lookup's rows of ``_PARCELS_SQL`` less its number and
    the key's columns, as the model would dump it: its fields in the model's order (zip
    ``strict``: a field added to a model and not here fails every request instead of going
    missing), without validating each value again."""
    first = rows[0]
    vehicle_id, lon, lat, vtime = first[11:15]
    position = (dict(zip(_POSITION_FIELDS, (lon, lat, vtime), strict=True))
                if dispatcher and lon is not None else None)  # fmt: skip
    timeline = [dict(zip(_EVENT_FIELDS, (t, status, sub, stop, van if dispatcher else None,
                                         detail if dispatcher else public_detail(detail)),
                         strict=True))
                for t, status, sub, stop, van, detail in (r[15:] for r in rows)
                if t is not None]  # fmt: skip
    return dict(zip(_PARCEL_FIELDS, (*first[:11], vehicle_id if dispatcher else None, position,
                                     timeline), strict=True))  # fmt: skip


@router.get("/{tracking_number}", response_model=Parcel, response_model_exclude_none=False,
            summary="Status, ETA window and timeline of one parcel")  # fmt: skip
async def get_parcel(
    request: Request,
    caller: Annotated[Bearer, Depends(_customer_or_dispatcher)],
    tracking_number: Annotated[str, Path(examples=["MP100200300"])],
) -> Response:
    # served by get_parcel_fast (see there); this route gives the OpenAPI document
    return await parcel_answer(request.state.parcel_lookups, caller, tracking_number)


async def get_parcel_fast(request: Request) -> Response:
    """``get_parcel`` as a plain endpoint, served before the FastAPI stack (``api.app``): the
    same answer, without FastAPI's dependency resolution and parameter validation, which
    cost more than the query on this, the customers' hot path."""
    caller = await _customer_or_dispatcher(request)
    return await parcel_answer(request.state.parcel_lookups, caller,
                               request.path_params["tracking_number"])  # fmt: skip


Lookup = tuple[str, str]  # the caller's key prefix, the tracking number
LOOKUPS_INFLIGHT = 2  # statements at once; lookups that come meanwhile wait and share one
Rows = list[tuple[Any, ...]]


def parcel_lookups(p: AsyncConnectionPool) -> Coalescer[Lookup, Rows]:
    """The app's batcher of parcel lookups (``api.coalesce``), on ``p``: a pool of
    autocommit connections, ``LOOKUPS_INFLIGHT`` at most."""

    async def fetch(lookups: list[Lookup]) -> list[Rows]:
        async with p.connection() as conn:
            cur = await conn.execute(_PARCELS_SQL, ([k for k, _ in lookups],
                                                    [n for _, n in lookups]))  # fmt: skip
            rows = await cur.fetchall()
        # rows come in lookup order (i from 1), each lookup's at least one: a lookup
        # without rows is an error (KeyError) for the batch, never another caller's rows
        by_i = {i: list(group) for i, group in groupby(rows, key=itemgetter(0))}
        return [by_i[i] for i in range(1, len(lookups) + 1)]

    return Coalescer(fetch, max_inflight=LOOKUPS_INFLIGHT)


async def parcel_answer(lookups: Coalescer[Lookup, Rows], caller: Bearer,
                        tracking_number: str) -> Response:  # fmt: skip
    # a malformed number is looked up as "", which no parcel has: the key is still checked
    # first, and unknown and malformed numbers answer alike
    number = tracking_number if _TRACKING.fullmatch(tracking_number) else ""
    rows = await lookups.get((caller.prefix, number))
    key = caller.admit(rows[0][1:_KEY])
    if rows[0][_KEY] is None:
        raise NOT_FOUND
    # the document is built as the model dumps it (see parcel_json); the response model
    # above stays what the OpenAPI document shows
    return JsonResponse(parcel_json([r[_KEY:] for r in rows], key.role in ("dispatcher", "admin")))


@router.get("", response_model=ParcelPage, summary="Parcels, cursor-paginated")
async def list_parcels(
    p: Annotated[AsyncConnectionPool, Depends(db_pool)],
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
