"""``create_app(settings)``: the FastAPI application; its lifespan owns the database pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypedDict

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.coalesce import Coalescer
from api.deps import check_connection, configure_connection
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
    parcel_lookups: Coalescer[parcels.Lookup, parcels.Rows]


LOOKUP_TIMEOUT_MS: Final = 10_000  # a parcel lookup statement's limit (statement_timeout)

# the two hottest reads: the customers' GET /v1/parcels/{n} and the dispatchers' fleet list
FAST_ENDPOINTS: Final = (("/v1/parcels/{tracking_number}", parcels.get_parcel_fast),
                         ("/v1/vehicles", vehicles.list_vehicles_fast))  # fmt: skip


class FastPaths:
    """Pure ASGI, in front of the application: a GET without a body on one of
    :data:`FAST_ENDPOINTS` goes straight to its plain endpoint; everything else to the
    FastAPI stack. The FastAPI routes of the same paths stay for the OpenAPI document
    and share the endpoints' code; tests/integration/test_fast_routes.py checks that both
    answer alike for every kind of caller.

    Skipped for these two: FastAPI's dependency resolution and parameter validation, and
    its seven middleware layers (server errors, exceptions, telemetry, body limit, exit
    stack, ours for the body limit and latency), which cost more than the query on the
    customers' hot path. What they do here is done here: the request's latency in the
    metrics, an error raised by the endpoint in the error format (``api.errors``), an
    unexpected one logged and answered 500 in the same format."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics
        self.routes: list[tuple[Route, Callable[[Request], Awaitable[Response]]]] = []
        for path, endpoint in FAST_ENDPOINTS:
            # only a GET is matched against it (a HEAD goes on to the FastAPI route)
            self.routes.append((Route(path, endpoint, methods=["GET"]), endpoint))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            for route, endpoint in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL and not any(
                        name in (b"content-length", b"transfer-encoding")
                        for name, _ in scope["headers"]):  # fmt: skip
                    await self._serve(route, endpoint, {**scope, **child, "route": route},
                                      receive, send)  # fmt: skip
                    return
        await self.app(scope, receive, send)

    async def _serve(self, route: Route, endpoint: Callable[[Request], Awaitable[Response]],
                     scope: Scope, receive: Receive, send: Send) -> None:  # fmt: skip
        t0 = time.perf_counter()
        try:
            response: Response = await endpoint(Request(scope, receive))
        except Exception as exc:  # answered in the error format, as the app does
            ours = errors.response_for(exc)
            if ours is None:
                log.exception("%s %s failed", scope["method"], scope["path"])
                ours = errors.error_response(500, "internal", "internal server error")
            response = ours
        self.metrics.observe("GET", route.path, f"{response.status_code // 100}xx",
                             time.perf_counter() - t0)  # fmt: skip
        await response(scope, receive, send)


class MilepostApi(FastAPI):
    """FastAPI with :class:`FastPaths` in front of it (before FastAPI's and Starlette's own
    ``__call__``, which set up its telemetry and its middleware stack)."""

    metrics: ApiMetrics
    fast: FastPaths | None = None  # made at the first call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is None:
            fast = self.fast = FastPaths(super().__call__, self.metrics)
        await fast(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        # check: a connection broken by a database restart is replaced, not handed out
        p = AsyncConnectionPool(settings.database_url, min_size=1, max_size=settings.db_pool_max,
                                open=False, name="api", check=check_connection)  # fmt: skip
        await p.open(wait=False)
        # the parcel lookups' own connections, in autocommit mode (one statement each, no
        # BEGIN and COMMIT), one per fetch in flight: never waiting behind other requests;
        # a statement that hangs fails its batch instead of holding every lookup after it
        lookup_pool = AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=parcels.LOOKUPS_INFLIGHT, open=False,
            name="api-lookups", check=check_connection, configure=configure_connection,
            kwargs={"autocommit": True,
                    "options": f"-c statement_timeout={LOOKUP_TIMEOUT_MS}"})  # fmt: skip
        await lookup_pool.open(wait=False)
        hub = LiveHub(settings.database_url)
        lookups = parcels.parcel_lookups(lookup_pool)
        listener = asyncio.create_task(hub.run(), name="live")
        # what start-up made (modules, models, routes) lives as long as the process: out
        # of the collector's way, so a full collection is not a pause of tens of ms
        gc.collect()
        gc.freeze()
        try:
            yield {"pool": p, "settings": settings, "osmand_registry": Registry(p, "osmand_id"),
                   "live": hub, "fleet": vehicles.FleetSnapshot(), "metrics": metrics,
                   "limiter": RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
                   "parcel_lookups": lookups}
        finally:
            await lookups.close()
            await lookup_pool.close()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await p.close()

    app = MilepostApi(
        title="milepost",
        version="1",
        summary="Fleet GPS and RFID telemetry for last-mile parcel delivery",
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.metrics = metrics
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
    return app
