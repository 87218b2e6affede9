"""``GET|POST /osmand``: the OsmAnd protocol as the Traccar Client app speaks it.

The app sends no key: the device id, registered with ``milepost devices add VAN
--osmand ID``, identifies it. A request is answered 200 only after its fixes (or the
dead letter that explains why not) have committed, so an acknowledged fix is never lost;
the app retries anything else. Fixes go through ingest's own stages and writer: one
write path for every transport.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from psycopg_pool import AsyncConnectionPool
from starlette.responses import Response

from api.deps import pool
from api.errors import ApiError
from devices.errors import DecodeError
from devices.gps import osmand
from devices.records import fixes_to_array
from ingest.batch import Batch, DeadLetter, FixFrame
from ingest.pipeline import TABLE_INSERTS, live_messages
from ingest.registry import Registry
from ingest.stages import run_stages
from ingest.writer import Writer

router = APIRouter(tags=["devices"])
MAX_BODY = 64 * 1024
SOURCE = "http:/osmand"


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
        if json_mode:
            msg = osmand.decode_json(body)
        else:
            params = list(request.query_params.multi_items())
            if body:
                params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            msg = osmand.decode_query(params, now_us=received)
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
    batch = Batch(len(msg.fixes) + 1, 2, 1e9)
    batch.add_fixes(vehicle, fixes_to_array(msg.fixes), received)
    result = run_stages(batch.drain().fixes)
    # the live stream and the fleet list hear of it as of ingest's fixes: on commit
    live = [(m,) for m in live_messages(result.frame, {})]
    await Writer(p).flush(result.frame, result.rejected, extra=[(TABLE_INSERTS["live"], live)])
    return Response(status_code=200)
