"""``GET /healthz``: liveness with database and broker state."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from api.coalesce import Coalescer
from api.deps import pool
from api.live import LiveHub
from api.metrics import CONTENT_TYPE, ApiMetrics, gauge_lines, ingest_lines
from api.responses import JsonResponse

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    broker: str
    schema_version: int | None
    checked_in_ms: float


async def _broker_state(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, TimeoutError) as exc:
        return f"down: {exc.__class__.__name__}"
    writer.close()
    return "up"


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(
    request: Request, p: Annotated[AsyncConnectionPool, Depends(pool)]
) -> JsonResponse:
    t0 = time.perf_counter()
    version: int | None = None
    try:
        async with p.connection(timeout=2.0) as conn:
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
        database = "up"
    except Exception as exc:
        database = f"down: {exc.__class__.__name__}"
    broker = await _broker_state(request.state.settings.mqtt_url)
    ok = database == "up" and broker == "up"
    body = Health(status="ok" if ok else "degraded", database=database, broker=broker,
                  schema_version=version,
                  checked_in_ms=round((time.perf_counter() - t0) * 1000, 2))  # fmt: skip
    return JsonResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus text",
            responses={200: {"content": {CONTENT_TYPE: {}}}})  # fmt: skip
async def metrics(request: Request, p: Annotated[AsyncConnectionPool, Depends(pool)]) -> Response:
    own: ApiMetrics = request.state.metrics
    hub: LiveHub = request.state.live
    lookups: Coalescer[Any, Any] = request.state.parcel_lookups
    parts = [own.text().decode(),
             gauge_lines("milepost_live_clients", "clients of GET /v1/live", [({}, hub.clients)]),
             gauge_lines("milepost_live_listening", "1 while the live LISTEN connection is up",
                         [({}, int(hub.connected))]),
             gauge_lines("milepost_live_dropped_clients", "live clients dropped as too slow",
                         [({}, hub.dropped_clients)], "counter"),
             gauge_lines("milepost_parcel_lookups", "GET /v1/parcels/{n} lookups answered",
                         [({}, lookups.keys)], "counter"),
             gauge_lines("milepost_parcel_lookup_statements",
                         "statements that answered them (batched under load: api.coalesce)",
                         [({}, lookups.fetches)], "counter")]  # fmt: skip
    try:
        async with p.connection(timeout=2.0) as conn:
            cur = await conn.execute(
                "SELECT instance, started_at, stats, extract(epoch FROM now() - updated_at)"
                " FROM ingest_stats ORDER BY instance")  # fmt: skip
            rows = [(r[0], r[1], r[2], float(r[3])) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE next_attempt_at < 'infinity'),"
                " count(*) FILTER (WHERE next_attempt_at = 'infinity'),"
                " coalesce(extract(epoch FROM now() - min(created_at) FILTER"
                " (WHERE next_attempt_at < 'infinity')), 0)"
                " FROM webhook_outbox WHERE delivered_at IS NULL")  # fmt: skip
            backlog = await cur.fetchone() or (0, 0, 0)
        parts.append(ingest_lines(rows))
        parts.append(gauge_lines("milepost_webhook_backlog", "webhook deliveries not yet made",
                                 [({}, backlog[0])]))
        parts.append(gauge_lines("milepost_webhook_given_up", "webhook deliveries given up",
                                 [({}, backlog[1])]))
        parts.append(gauge_lines("milepost_webhook_oldest_pending_seconds",
                                 "age of the oldest pending webhook delivery",
                                 [({}, round(float(backlog[2]), 3))]))
        parts.append(gauge_lines("milepost_database_up", "1 when the database answered",
                                 [({}, 1)]))
    except Exception:  # the database is down: say so, serve the rest
        parts.append(gauge_lines("milepost_database_up", "1 when the database answered",
                                 [({}, 0)]))
    return Response("".join(parts), media_type=CONTENT_TYPE)
