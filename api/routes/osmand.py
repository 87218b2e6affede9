"""``GET|POST /osmand``: the OsmAnd protocol as the Traccar Client app speaks it.

The app sends no key: the device id, registered with ``milepost devices add VAN
--osmand ID``, identifies it. The request is decoded here, to answer what is wrong with
it, and stored as it came in ``fix_inbox``; it is answered 200 only once that row (or the
dead letter that explains why not) has committed, so an acknowledged fix is never lost,
and the app retries anything else. ``milepost ingest``, woken by a notification, runs
the fixes through the same stages as every other transport's (geofences, bindings,
lifecycle, ETAs) and stores them; a phone is a van like any other.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from psycopg_pool import AsyncConnectionPool
from starlette.responses import Response

from api.deps import pool
from api.errors import ApiError
from devices.errors import DecodeError
from devices.gps import osmand
from ingest.batch import DeadLetter, FixFrame
from ingest.pipeline import INBOX_CHANNEL
from ingest.registry import Registry
from ingest.writer import Writer, us_to_datetime

router = APIRouter(tags=["devices"])
MAX_BODY = 64 * 1024
SOURCE = "http:/osmand"
_INBOX_SQL = ("INSERT INTO fix_inbox (received_at, vehicle_id, source, json, payload)"
              " VALUES (%s, %s, %s, %s, %s)")


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, "too_large", f"request body over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "too_large", f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _dead(p: AsyncConnectionPool, received_us: int, raw: bytes, reason: str) -> None:
    await Writer(p).flush(FixFrame.empty(), [DeadLetter(received_us, SOURCE, raw, reason)])


_RESPONSES: dict[int | str, dict[str, str]] = {
    200: {"description": "stored (empty body)"},
    400: {"description": "malformed request, or unknown device id (query mode)"},
    404: {"description": "unknown device id (JSON mode)"}}


@router.get("/osmand", summary="OsmAnd / Traccar Client position report (query)",
            operation_id="osmand_get", responses=_RESPONSES)
@router.post("/osmand", summary="OsmAnd / Traccar Client position report (form or JSON)",
             operation_id="osmand_post", responses=_RESPONSES)
async def report(request: Request, p: Annotated[AsyncConnectionPool, Depends(pool)]) -> Response:
    received = time.time_ns() // 1000
    body = await _body(request)
    json_mode = request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
    raw = body if json_mode else request.url.query.encode() + (b"&" + body if body else b"")
    try:
        msg = osmand.decode_request(raw, json_mode=json_mode, now_us=received)
    except DecodeError as exc:
        await _dead(p, received, raw, str(exc))
        raise ApiError(400, "bad_request", str(exc)) from exc
    registry: Registry = request.state.osmand_registry
    vehicle = await registry.vehicle_for(msg.device_id)
    if vehicle is None:
        reason = (f"unknown OsmAnd device id {msg.device_id!r}; register it with"
                  f" `milepost devices add VEHICLE_ID --osmand {msg.device_id}`")  # fmt: skip
        await _dead(p, received, raw, reason)
        raise ApiError(404 if json_mode else 400, "unknown_device", reason)
    if msg.fixes:  # (a report without a position is answered and not stored)
        async with p.connection() as conn, conn.transaction():
            await conn.execute(_INBOX_SQL, (us_to_datetime(received), vehicle, SOURCE,
                                            json_mode, raw))  # fmt: skip
            await conn.execute(f"NOTIFY {INBOX_CHANNEL}")
    return Response(status_code=200)
