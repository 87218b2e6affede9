"""The two hot reads are plain endpoints served in front of the FastAPI stack
(api.app.FastPaths): each answers exactly as its FastAPI route, for every kind of caller."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import FastPaths, MilepostApi, create_app
from api.keys import create_key, revoke_key
from milepost.settings import load_settings
from tests.integration.conftest import free_port, wait_until

FAST_PATHS = {"/v1/parcels/{tracking_number}", "/v1/vehicles"}


class FastApiOnly:
    """The app without its fast layer (api.app.FastPaths): the FastAPI routes answer."""

    def __init__(self, app: MilepostApi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.app, scope, receive, send)


@contextmanager
def serving(app: ASGIApp) -> Iterator[httpx.Client]:
    """``app`` under uvicorn on a free port, in a thread of this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what=f"uvicorn on {port}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def apps(env: dict[str, str]) -> tuple[MilepostApi, FastApiOnly]:
    settings = load_settings(environ=env)
    fast, plain = create_app(settings), create_app(settings)
    assert isinstance(fast, MilepostApi) and isinstance(plain, MilepostApi)
    return fast, FastApiOnly(plain)


@pytest.fixture(scope="module")
def clients(apps: tuple[MilepostApi, FastApiOnly]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with serving(apps[0]) as fast, serving(apps[1]) as plain:
        yield fast, plain


def test_the_fast_endpoints_are_the_ones_routed(apps: tuple[MilepostApi, FastApiOnly],
                                                clients: tuple[httpx.Client, httpx.Client]
                                                ) -> None:  # fmt: skip
    fast_app, plain_app = apps
    for client in clients:
        assert client.get("/healthz").status_code == 200  # the stacks are built
    assert isinstance(fast_app.fast, FastPaths)
    assert {route.path for route, _ in fast_app.fast.routes} == FAST_PATHS
    assert plain_app.app.fast is None  # never called through MilepostApi.__call__
    fast = clients[0]
    # and the OpenAPI document still shows both, with their parameters
    paths = fast.get("/openapi.json").json()["paths"]
    assert "bbox" in str(paths["/v1/vehicles"]["get"]["parameters"])
    assert paths["/v1/parcels/{tracking_number}"]["get"]["responses"]["200"]


def test_same_answers_for_every_caller(clients: tuple[httpx.Client, httpx.Client],
                                       db: psycopg.Connection) -> None:  # fmt: skip
    fast, plain = clients
    tag = secrets.token_hex(3).upper()
    keys = {role: create_key(db, role, f"fast-{role}")
            for role in ("dispatcher", "customer", "device", "admin")}  # fmt: skip
    revoked = create_key(db, "dispatcher", "fast-revoked")
    revoke_key(db, revoked.split("_")[1])
    db.commit()
    doc = {"stops": [{"stop_id": f"S-{tag}", "kind": "delivery", "name": "1 Fast Way",
                      "radius_m": 30, "geofence": {"type": "Point", "coordinates": [13.4, 52.5]}}],
           "parcels": [{"tracking_number": f"MP{tag}001", "stop_id": f"S-{tag}",
                        "promised_by": "2026-11-24T18:00:00+01:00"}]}  # fmt: skip
    auth = {"Authorization": f"Bearer {keys['dispatcher']}"}
    assert plain.put("/v1/manifest", json=doc, headers=auth).status_code == 200
    db.execute("INSERT INTO vehicle_latest (vehicle_id, time, lon, lat) VALUES (%s, now(),"
               " 13.4, 52.5) ON CONFLICT DO NOTHING", (f"T{tag}-VAN",))  # fmt: skip
    db.commit()

    callers = {"none": {}, "garbage": {"Authorization": "Bearer garbage"},
               "unknown": {"Authorization": "Bearer mp_00000000_nope"},
               "basic": {"Authorization": "Basic eDp5"},
               "revoked": {"Authorization": f"Bearer {revoked}"},
               **{role: {"Authorization": f"Bearer {k}"} for role, k in keys.items()}}  # fmt: skip
    paths = [f"/v1/parcels/MP{tag}001", f"/v1/parcels/MP{tag}999", "/v1/parcels/x",
             "/v1/parcels/MP%20001", "/v1/vehicles", "/v1/vehicles?bbox=13.3,52.4,13.5,52.6",
             "/v1/vehicles?bbox=1,2,3", "/v1/vehicles?other=1"]  # fmt: skip
    answered = set()
    for path in paths:
        for who, headers in callers.items():
            a, b = fast.get(path, headers=headers), plain.get(path, headers=headers)
            assert a.status_code == b.status_code, (path, who, a.text, b.text)
            assert a.headers.get("content-type") == b.headers.get("content-type"), (path, who)
            assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
            if path.startswith("/v1/vehicles") and a.status_code == 200:
                # the fleet list's age_s moves between two requests
                va, vb = a.json()["vehicles"], b.json()["vehicles"]
                strip = [{k: v for k, v in x.items() if k != "age_s"} for x in va]
                assert strip == [{k: v for k, v in x.items() if k != "age_s"} for x in vb]
            else:
                assert a.json() == b.json(), (path, who)
            answered.add(a.status_code)
        # a method the route does not take: both 405
        assert fast.head(path).status_code == plain.head(path).status_code == 405
        assert fast.post(path).status_code == plain.post(path).status_code == 405
    assert answered >= {200, 401, 403, 404, 422}
