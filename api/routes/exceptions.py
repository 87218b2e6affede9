"""``GET /v1/exceptions?since=``: the parcels whose current status is an exception, for the
dispatcher's queue: mis-load, left behind, wrong drop, late, cold chain, unbound; and
failed attempts, which need a decision too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.deps import pool, require

router = APIRouter(prefix="/v1/exceptions", tags=["parcels"])


class OpenException(BaseModel):
    tracking_number: str
    status: str = Field(description="Exception or AttemptFail")
    sub_status: str | None = Field(examples=["Exception_MISLOAD"])
    since: datetime = Field(description="event time of the exception")
    vehicle_id: str | None
    stop_id: str | None = Field(description="the parcel's destination stop")
    detail: dict[str, Any] | None = Field(description="the evidence, from the parcel event")


class ExceptionList(BaseModel):
    exceptions: list[OpenException]
    count: int


@router.get("", response_model=ExceptionList, summary="Open exceptions, newest first")
async def list_exceptions(
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[object, Depends(require("dispatcher"))],
    since: Annotated[datetime | None, Query(description="only those raised at or after"
                                                        " this time (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> ExceptionList:
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT l.tracking_number, l.status, l.sub_status, l.time AS since, l.vehicle_id,"
            " p.stop_id, e.detail FROM parcel_latest l JOIN parcel p USING (tracking_number)"
            " LEFT JOIN LATERAL (SELECT detail FROM parcel_event pe"
            "  WHERE pe.tracking_number = l.tracking_number AND pe.status = l.status"
            "  AND pe.sub_status IS NOT DISTINCT FROM l.sub_status"
            "  ORDER BY pe.time DESC LIMIT 1) e ON true"
            " WHERE l.status IN ('Exception', 'AttemptFail')"
            " AND (%s::timestamptz IS NULL OR l.time >= %s::timestamptz)"
            " ORDER BY l.time DESC LIMIT %s", (since, since, limit))  # fmt: skip
        rows = await cur.fetchall()
    return ExceptionList(exceptions=[OpenException(**r) for r in rows], count=len(rows))
