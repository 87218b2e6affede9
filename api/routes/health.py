"""``GET /healthz``: liveness with database and broker state."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from api.deps import pool
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
