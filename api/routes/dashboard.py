"""``GET /dashboard``: the dispatcher's live map (``api/static/dashboard.*``), and the
static files it needs: its own under ``/static/``, Leaflet from the npm package the
Makefile installs (``node_modules/leaflet/dist``) under ``/vendor/leaflet/``. Nothing is
loaded from elsewhere; with ``MILEPOST_MAP_TILES_URL`` set, the map adds that tile
server's background (and ``MILEPOST_MAP_ATTRIBUTION``)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

router = APIRouter(tags=["pages"])
log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parents[1] / "static"
LEAFLET = Path(__file__).resolve().parents[2] / "node_modules" / "leaflet" / "dist"


def mount(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if not (LEAFLET / "leaflet.js").exists():
        log.warning("%s is missing: run `make` (npm ci) for the dashboard's map", LEAFLET)
    app.mount("/vendor/leaflet", StaticFiles(directory=LEAFLET, check_dir=False), name="leaflet")


@router.get("/dashboard", response_class=HTMLResponse, summary="The dispatcher's live map")
async def dashboard(request: Request) -> HTMLResponse:
    s = request.state.settings
    config = orjson.dumps({"tiles": s.map_tiles_url, "attribution": s.map_attribution})
    # a JSON script block: "<" escaped so nothing in the settings can close it
    html = (STATIC / "dashboard.html").read_text().replace(
        "__CONFIG__", config.decode().replace("<", "\\u003c"))
    tiles = urlsplit(s.map_tiles_url) if s.map_tiles_url else None
    img = "'self' data:" + (f" {tiles.scheme}://{tiles.netloc}" if tiles else "")
    # the config block is JSON, not a script: script-src 'self' covers the page
    csp = (f"default-src 'self'; img-src {img}; style-src 'self' 'unsafe-inline';"
           " script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
    return HTMLResponse(html, headers={"Cache-Control": "no-store",
                                       "Content-Security-Policy": csp,
                                       "X-Content-Type-Options": "nosniff",
                                       "Referrer-Policy": "no-referrer"})
