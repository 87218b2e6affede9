"""``create_app(settings)``: the FastAPI application; its lifespan owns the database pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from starlette.routing import Route

from api import errors
from api.deps import check_connection
from api.limits import BodyLimit
from api.live import LiveHub
from api.metrics import ApiMetrics, LatencyMiddleware
from api.ratelimit import RateLimiter
from api.responses import JsonResponse
from api.routes import (
    dashboard,
    epcis,
    exceptions,
    health,
    live,
    manifest,
    osmand,
    parcels,
    pod,
    track,
    vehicles,
    webhooks,
)
from ingest.registry import Registry
from milepost.settings import Settings, load_settings

log = logging.getLogger(__name__)


class State(TypedDict):
    pool: AsyncConnectionPool
    settings: Settings
    osmand_registry: Registry
    live: LiveHub
    fleet: vehicles.FleetSnapshot
    metrics: ApiMetrics
    limiter: RateLimiter


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        # check: a connection broken by a database restart is replaced, not handed out
        p = AsyncConnectionPool(settings.database_url, min_size=1, max_size=settings.db_pool_max,
                                open=False, name="api", check=check_connection)  # fmt: skip
        await p.open(wait=False)
        hub = LiveHub(settings.database_url)
        listener = asyncio.create_task(hub.run(), name="live")
        # what start-up made (modules, models, routes) lives as long as the process: out
        # of the collector's way, so a full collection is not a pause of tens of ms
        gc.collect()
        gc.freeze()
        try:
            yield {"pool": p, "settings": settings, "osmand_registry": Registry(p, "osmand_id"),
                   "live": hub, "fleet": vehicles.FleetSnapshot(), "metrics": metrics,
                   "limiter": RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)}
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await p.close()

    app = FastAPI(
        title="milepost",
        version="1",
        summary="Fleet GPS and RFID telemetry for last-mile parcel delivery",
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, default=settings.api_max_body_bytes,
                       per_path={"/v1/manifest": manifest.MAX_BYTES})  # fmt: skip
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(vehicles.router)
    app.include_router(osmand.router)
    app.include_router(manifest.router)
    app.include_router(parcels.router)
    app.include_router(exceptions.router)
    app.include_router(pod.router)
    app.include_router(webhooks.router)
    app.include_router(epcis.router)
    app.include_router(live.router)
    app.include_router(track.router)
    app.include_router(dashboard.router)
    dashboard.mount(app)
    # the two hottest reads, as plain endpoints in front of their FastAPI routes (which
    # stay for the OpenAPI document and share their code): see get_parcel_fast
    for path, endpoint in (("/v1/parcels/{tracking_number}", parcels.get_parcel_fast),
                           ("/v1/vehicles", vehicles.list_vehicles_fast)):  # fmt: skip
        fast = Route(path, endpoint, methods=["GET"])
        fast.methods = {"GET"}  # as the FastAPI route: no implicit HEAD
        app.router.routes.insert(0, fast)
    return app
