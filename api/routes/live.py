"""``GET /v1/live``: server-sent events of positions, parcel events and exceptions.

Events: ``position`` (a van's newest fix: vehicle_id, time, lon, lat, speed_mps,
heading_deg), ``parcel`` (a parcel event: event_id, tracking_number, time, status,
sub_status, vehicle_id, stop_id) and ``exception`` (the parcel events whose status is
``Exception``). A new stream starts with a ``snapshot``: every van's newest position as
``position`` events. Reconnecting with ``Last-Event-ID`` resumes where the stream
stopped, without a snapshot, while the API still holds what was missed (its last 10,000
messages). A comment line every ``HEARTBEAT_S`` keeps proxies from closing an idle
stream. ``vehicle_id`` (repeatable) limits the stream to those vans.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from psycopg_pool import AsyncConnectionPool
from starlette.responses import StreamingResponse

from api.deps import pool, require
from api.live import LiveHub, Message, iso_us

router = APIRouter(prefix="/v1/live", tags=["live"])
HEARTBEAT_S = 15.0


@router.get("", summary="Live positions, parcel events and exceptions (text/event-stream)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
async def live(
    request: Request,
    p: Annotated[AsyncConnectionPool, Depends(pool)],
    _key: Annotated[object, Depends(require("dispatcher"))],
    vehicle_id: Annotated[list[str] | None, Query(max_length=1000)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    hub: LiveHub = request.state.live
    client, missed = hub.subscribe(vehicle_id, last_event_id)
    snapshot: list[bytes] = []
    if missed is None:
        async with p.connection() as conn:
            cur = await conn.execute(
                "SELECT vehicle_id, time, lon, lat, speed_mps, heading_deg FROM vehicle_latest"
                " WHERE %s::text[] IS NULL OR vehicle_id = ANY(%s::text[]) ORDER BY vehicle_id",
                (vehicle_id, vehicle_id))  # fmt: skip
            rows = await cur.fetchall()
        for vid, t, lon, lat, speed, heading in rows:
            data = {"vehicle_id": vid, "time": iso_us(int(t.timestamp() * 1e6)), "lon": lon,
                    "lat": lat, "speed_mps": speed, "heading_deg": heading}  # fmt: skip
            snapshot.append(b"event: position\ndata: %s\n\n" % orjson.dumps(data))

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\nevent: hello\ndata: {\"resumed\": %s}\n\n" % (
                b"true" if missed is not None else b"false")
            for chunk in snapshot:
                yield chunk
            for m in missed or ():
                yield m.sse()
            while True:
                try:
                    item: Message | None = await asyncio.wait_for(client.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                if item is None:  # the hub let this client go: it fell too far behind
                    return
                yield item.sse()
        finally:
            hub.unsubscribe(client)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
