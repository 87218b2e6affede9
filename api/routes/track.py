"""``GET /track/{tracking_number}``: the customer's tracking page, public, server-rendered.

What a customer sees, and what they never see:

- the status in plain words (:func:`headline`), never milepost's internal sub-status
  names; the AfterShip-style timeline, newest first, with times in ``MILEPOST_TIMEZONE``;
  the ETA window rounded outward to 5 minutes (:func:`eta_text`) and the promised time;
- the van's distance, rounded to 0.5 km and never as coordinates, only once the
  parcel's stop is the van's next one: the parcel is ``OutForDelivery`` and no other open
  parcel bound to the same van has an earlier ETA at another stop. That decision is taken
  in SQL, so the van's position is not even read otherwise;
- after delivery, the time and the proof (signed by, the driver's note, an ``https``
  photo link);
- no vehicle id, stop id, evidence or confidence, anywhere.

An unknown tracking number and a malformed one get the same 404 page, after the same
single indexed query (a malformed number is looked up as ``''``, which no parcel has), so
tracking numbers cannot be enumerated by content, status or timing.

No JavaScript, no external requests (the logo only when ``MILEPOST_BRAND_LOGO_URL`` is
set, and the CSP admits only its origin), every interpolated text through
:func:`html.escape`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import escape
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.deps import pool
from geo.fences import haversine_m
from ingest.parcels import geofence_center as stop_center  # the centre the ETAs aim at
from milepost.settings import Settings

router = APIRouter(tags=["pages"])

TRACKING: Final = re.compile(r"[A-Za-z0-9-]{6,40}")
ROUND_S: Final = 300  # ETA windows are rounded outward to 5 minutes
MAX_EVENTS: Final = 100  # newest first; a parcel has a handful

# ---------------------------------------------------------------- status sentences

DELAY: Final = "There is a delay with your parcel"
HEADLINES: Final[Mapping[str, str]] = {
    "InfoReceived": "We have your parcel's details",
    "InTransit": "At our local hub",
    "OutForDelivery": "Out for delivery",
    "AttemptFail": "We tried to deliver your parcel",
    "Delivered": "Delivered",
    "Exception": DELAY,
    "Expired": "No recent updates on your parcel",
}
# sub-statuses that read differently from their status; every Exception_* other than
# LATE is deliberately the calm DELAY sentence: a customer never reads MISLOAD or UNBOUND
SUB_HEADLINES: Final[Mapping[str, str]] = {
    "InTransit_007": "Loaded onto a delivery van",
    "Exception_LATE": "Running late",
}
# one more sentence under the headline of the parcel's current state
EXPLAIN: Final[Mapping[str, str]] = {
    "InfoReceived": "We will update this page when your parcel reaches our hub.",
    "InTransit": "It will be loaded onto a delivery van soon.",
    "InTransit_007": "It will leave our hub with the van soon.",
    "OutForDelivery": "Your parcel is on its way to you.",
    "AttemptFail": "Please check this page for what happens next.",
    "Exception": "We are working on it and will update this page.",
    "Exception_LATE": "We are sorry: your parcel will arrive later than promised.",
    "Expired": "If you are still waiting for it, please contact the sender.",
}
UNKNOWN_STATUS: Final = "We have your parcel's details"


def headline(status: str, sub_status: str | None) -> str:
    """The customer's sentence for a status and sub-status."""
    if sub_status is not None and sub_status in SUB_HEADLINES:
        return SUB_HEADLINES[sub_status]
    return HEADLINES.get(status, UNKNOWN_STATUS)


def explanation(status: str, sub_status: str | None) -> str | None:
    if sub_status is not None and sub_status in EXPLAIN:
        return EXPLAIN[sub_status]
    return EXPLAIN.get(status)


def _text(value: object) -> str | None:
    """A non-empty string from an event's detail, else None."""
    return (value.strip() or None) if isinstance(value, str) else None


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def notes(status: str, detail: Mapping[str, Any]) -> list[str]:
    """What a proof of delivery adds to an event, in the customer's words: who signed,
    the driver's note ("left at the door"). Only a driver's own note is shown, not the
    reasons milepost infers (a failed attempt seen by the cargo reader)."""
    out = []
    if status == "Delivered" and (who := _text(detail.get("signed_by"))):
        out.append(f"Signed for by {who}")
    if status in ("Delivered", "AttemptFail") and detail.get("evidence") == "pod" and (
        note := _text(detail.get("reason"))
    ):
        out.append(_sentence_case(note))
    return out


def photo_link(detail: Mapping[str, Any]) -> str | None:
    """The proof's photo URL when it is https (anything else is not linked)."""
    url = _text(detail.get("photo_url"))
    if url is None:
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() == "https" and parts.hostname else None


# ---------------------------------------------------------------- times and distances


def day_label(day: date, today: date) -> str:
    """``today``, a weekday within six days either side, else weekday and date."""
    if day == today:
        return "today"
    if abs((day - today).days) <= 6:
        return f"{day:%A}"
    year = f" {day.year}" if day.year != today.year else ""
    return f"{day:%A} {day.day} {day:%B}{year}"


def _on(day: date, today: date) -> str:
    label = day_label(day, today)
    return label if label == "today" else f"on {label}"


def _hm(t: datetime) -> str:
    return f"{t:%H:%M}"


def _zone(t: datetime) -> str:
    return t.tzname() or ""


def _floor(t: datetime, step_s: int) -> datetime:
    ts = math.floor(t.timestamp() / step_s) * step_s
    return datetime.fromtimestamp(ts, UTC)


def _ceil(t: datetime, step_s: int) -> datetime:
    ts = math.ceil(t.timestamp() / step_s) * step_s
    return datetime.fromtimestamp(ts, UTC)


def eta_text(earliest: datetime, latest: datetime, now: datetime, tz: ZoneInfo) -> str:
    """``Expected today between 14:10 and 14:40 CET``: the window rounded outward to
    5 minutes, in ``tz``, with the day when it is not today."""
    lo, hi = sorted((earliest, latest))
    a, b = _floor(lo, ROUND_S).astimezone(tz), _ceil(hi, ROUND_S).astimezone(tz)
    today = now.astimezone(tz).date()
    if a == b:
        return f"Expected {_on(a.date(), today)} at about {_hm(a)} {_zone(a)}"
    first = _hm(a) if _zone(a) == _zone(b) else f"{_hm(a)} {_zone(a)}"
    if a.date() == b.date():
        return f"Expected {_on(a.date(), today)} between {first} and {_hm(b)} {_zone(b)}"
    return (f"Expected between {day_label(a.date(), today)} {first}"
            f" and {day_label(b.date(), today)} {_hm(b)} {_zone(b)}")  # fmt: skip


def promised_text(promised: datetime, now: datetime, tz: ZoneInfo) -> str:
    t = promised.astimezone(tz)
    return f"Promised by {_hm(t)} {_zone(t)} {_on(t.date(), now.astimezone(tz).date())}"


def when_text(t: datetime, now: datetime, tz: ZoneInfo) -> str:
    """A timeline time: ``Today, 14:32 CET`` / ``Monday, 09:10 CET``."""
    local = t.astimezone(tz)
    day = day_label(local.date(), now.astimezone(tz).date())
    return f"{_sentence_case(day)}, {_hm(local)} {_zone(local)}"


def at_text(t: datetime, now: datetime, tz: ZoneInfo) -> str:
    """Inside a sentence: ``today at 14:32 CET`` / ``on Monday at 09:10 CET``."""
    local = t.astimezone(tz)
    return f"{_on(local.date(), now.astimezone(tz).date())} at {_hm(local)} {_zone(local)}"


def distance_text(dist_m: float) -> str | None:
    """``Your driver is about 2.5 km away``, rounded to 0.5 km; None without a distance."""
    if not math.isfinite(dist_m) or dist_m < 0:
        return None
    half_km = math.floor(dist_m / 500.0 + 0.5) / 2.0
    if half_km < 0.5:
        return "Your driver is less than 0.5 km away"
    return f"Your driver is about {half_km:g} km away"


# ---------------------------------------------------------------- branding and headers


def _luminance(hex_color: str) -> float:
    def channel(c: int) -> float:
        s = c / 255.0
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


WHITE, BLACK, INK = "#ffffff", "#000000", "#1a1a1a"
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class Brand:
    """What the page takes from the settings."""

    name: str = "milepost"
    color: str = "#1f5fbf"
    logo_url: str | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    def __post_init__(self) -> None:
        if not _COLOR.fullmatch(self.color):
            raise ValueError(f"brand colour {self.color!r} is not #rrggbb")

    @classmethod
    def from_settings(cls, s: Settings) -> Brand:
        return cls(s.brand_name, s.brand_color, s.brand_logo_url, ZoneInfo(s.timezone))

    @property
    def on_color(self) -> str:
        """Header text: white or black, whichever contrasts more with the brand colour
        (one of them always reaches 4.58:1)."""
        return WHITE if contrast(WHITE, self.color) >= contrast(BLACK, self.color) else BLACK

    @property
    def accent_text(self) -> str:
        """The brand colour for text on white only when it is readable (4.5:1)."""
        return self.color if contrast(WHITE, self.color) >= 4.5 else INK

    @property
    def logo(self) -> tuple[str | None, str]:
        """(the logo URL to show, the CSP ``img-src``): a same-origin path or an http(s)
        URL with a plain host; anything else is not shown."""
        url = self.logo_url
        if not url:
            return None, "'self'"
        if url.startswith("/") and not url.startswith("//"):
            return url, "'self'"
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https") and _HOST.fullmatch(parts.netloc):
            return url, f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        return None, "'self'"


def security_headers(brand: Brand) -> dict[str, str]:
    img = brand.logo[1]
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": f"default-src 'none'; style-src 'unsafe-inline'; img-src {img};"
                                   " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }  # fmt: skip


# ---------------------------------------------------------------- the page


@dataclass(frozen=True, slots=True)
class Event:
    time: datetime
    status: str
    sub_status: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrackView:
    """One parcel as the customer may see it: nothing here names a van."""

    tracking_number: str
    status: str
    sub_status: str | None
    updated: datetime
    events: Sequence[Event] = ()  # newest first
    stop_name: str | None = None
    promised_by: datetime | None = None
    eta_earliest: datetime | None = None
    eta_latest: datetime | None = None
    driver_dist_m: float | None = None  # only when the parcel's stop is the van's next


CSS: Final = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:#1a1a1a;background:#f4f5f7}
.skip{position:absolute;left:-999px;top:0;padding:.5rem 1rem;background:#fff;color:#1a1a1a}
.skip:focus{left:0;z-index:1}
header{background:var(--brand);color:var(--on-brand);padding:.75rem 1rem}
header .in{max-width:38rem;margin:0 auto;display:flex;align-items:center;gap:.75rem}
header img{max-height:2.5rem;max-width:12rem;height:auto;display:block}
header .name{font-weight:700;font-size:1.125rem}
main{max-width:40rem;margin:0 auto;padding:1rem}
.card{background:#fff;border-radius:.5rem;padding:1rem 1.25rem;margin:0 0 1rem;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.status{border-left:.375rem solid var(--brand)}
h1{font-size:1.5rem;line-height:1.25;margin:.25rem 0 .5rem}
h2{font-size:1.125rem;margin:0 0 .75rem}
p{margin:.25rem 0}
.muted{color:#4a4f57}
.eta{font-size:1.125rem;font-weight:600;color:var(--accent)}
a{color:var(--accent)}
a:focus-visible,.skip:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px}
dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
ol.timeline{list-style:none;margin:0;padding:0}
ol.timeline li{position:relative;padding:0 0 1rem 1.5rem;border-left:2px solid #c9ccd1;
margin-left:.375rem}
ol.timeline li:last-child{border-left-color:transparent;padding-bottom:0}
ol.timeline li::before{content:"";position:absolute;left:-.4375rem;top:.3rem;width:.75rem;
height:.75rem;border-radius:50%;background:#fff;border:2px solid #6b7079}
ol.timeline li:first-child::before{background:var(--brand);border-color:var(--brand)}
ol.timeline time{display:block;font-size:.875rem;color:#4a4f57}
.tn{overflow-wrap:anywhere}
footer{max-width:40rem;margin:0 auto;padding:0 1rem 2rem;font-size:.875rem;color:#4a4f57}
@media (min-width:48rem){main{padding:2rem 1rem}h1{font-size:1.875rem}}
"""


def _document(brand: Brand, title: str, body: str, *, refresh: bool) -> str:
    logo, _ = brand.logo
    name = escape(brand.name)
    mark = (f'<img src="{escape(logo)}" alt="{name}">' if logo
            else f'<span class="name">{name}</span>')  # fmt: skip
    style = (f":root{{--brand:{brand.color};--on-brand:{brand.on_color};"
             f"--accent:{brand.accent_text}}}{CSS}")  # fmt: skip
    meta = '<meta http-equiv="refresh" content="60">\n' if refresh else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f'<meta name="theme-color" content="{brand.color}">\n{meta}'
        f"<title>{escape(title)} - {name}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        '<a class="skip" href="#main">Skip to the parcel\'s status</a>\n'
        f'<header><div class="in">{mark}</div></header>\n'
        f'<main id="main" tabindex="-1">\n{body}</main>\n</body>\n</html>\n'
    )


def _timeline(events: Sequence[Event], now: datetime, tz: ZoneInfo) -> str:
    items = []
    for e in events:
        extra = "".join(f'<p class="muted">{escape(n)}</p>' for n in notes(e.status, e.detail))
        items.append(f'<li><time datetime="{e.time.astimezone(UTC).isoformat()}">'
                     f"{escape(when_text(e.time, now, tz))}</time>"
                     f"<p>{escape(headline(e.status, e.sub_status))}</p>{extra}</li>")  # fmt: skip
    return "\n".join(items)


def render_track(view: TrackView, brand: Brand, now: datetime) -> str:
    """The whole tracking page of one parcel, as of ``now`` (for "today")."""
    tz = brand.tz
    done = view.status == "Delivered"
    title = headline(view.status, view.sub_status)
    parts = ['<section class="card status" aria-labelledby="status">',
             f'<p class="tn muted">Tracking number {escape(view.tracking_number)}</p>',
             f'<h1 id="status">{escape(title)}</h1>']  # fmt: skip
    if (why := explanation(view.status, view.sub_status)) is not None:
        parts.append(f"<p>{escape(why)}</p>")
    waiting = view.status not in ("Delivered", "AttemptFail", "Expired")
    if waiting and view.eta_earliest is not None and view.eta_latest is not None:
        parts.append(f'<p class="eta">'
                     f"{escape(eta_text(view.eta_earliest, view.eta_latest, now, tz))}</p>")
    if view.driver_dist_m is not None and (near := distance_text(view.driver_dist_m)):
        parts.append(f"<p>{escape(near)}</p>")
    if not done and view.promised_by is not None:
        parts.append(f'<p class="muted">{escape(promised_text(view.promised_by, now, tz))}</p>')
    if view.stop_name:
        to = "Delivered to" if done else "Delivering to"
        parts.append(f'<p class="muted">{to} {escape(view.stop_name)}</p>')
    parts.append("</section>")
    if done:
        parts.append(_proof(view, now, tz))
    if view.events:
        parts += ['<section class="card" aria-labelledby="history">',
                  '<h2 id="history">History</h2>',
                  f'<ol class="timeline">\n{_timeline(view.events, now, tz)}\n</ol>',
                  "</section>"]  # fmt: skip
    parts.append(f'<p class="muted">Last updated {escape(at_text(view.updated, now, tz))}.'
                 + ("" if done else " This page refreshes every minute.") + "</p>")
    return _document(brand, title, "\n".join(parts) + "\n", refresh=not done)


def _proof(view: TrackView, now: datetime, tz: ZoneInfo) -> str:
    event = next((e for e in view.events if e.status == "Delivered"), None)
    detail: Mapping[str, Any] = event.detail if event is not None else {}
    at = event.time if event is not None else view.updated
    rows = [("Delivered", when_text(at, now, tz))]
    if who := _text(detail.get("signed_by")):
        rows.append(("Signed for by", who))
    if detail.get("evidence") == "pod" and (note := _text(detail.get("reason"))):
        rows.append(("Driver's note", _sentence_case(note)))
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    if url := photo_link(detail):
        items += (f'<dt>Photo</dt><dd><a href="{escape(url)}" rel="noopener noreferrer">'
                  "See the photo of your delivery</a></dd>")  # fmt: skip
    return ('<section class="card" aria-labelledby="proof"><h2 id="proof">Delivery</h2>'
            f"<dl>{items}</dl></section>")  # fmt: skip


NOT_FOUND_TITLE: Final = "We could not find that parcel"


def render_not_found(brand: Brand) -> str:
    """The one page for every parcel that is not there (unknown, malformed)."""
    body = ('<section class="card status" aria-labelledby="status">'
            f'<h1 id="status">{NOT_FOUND_TITLE}</h1>'
            "<p>Please check the tracking number in the message you received from the"
            " sender. New parcels can take a little while to appear.</p></section>\n")  # fmt: skip
    return _document(brand, NOT_FOUND_TITLE, body, refresh=False)


def render_unavailable(brand: Brand) -> str:
    title = "Tracking is unavailable for a moment"
    body = ('<section class="card status" aria-labelledby="status">'
            f'<h1 id="status">{title}</h1><p>Please try again in a minute.</p></section>\n')
    return _document(brand, title, body, refresh=False)


# ---------------------------------------------------------------- the handler

# One query, one round trip, through parcel's primary key. The van's position is joined
# only when the parcel's stop is its next one (see the module docstring); AttemptFail
# parcels are not "ahead": their stop was visited, so their ETA is no longer refreshed.
QUERY: Final = """
SELECT p.tracking_number, p.promised_by, p.created_at, s.name AS stop_name, s.geofence,
       coalesce(l.status, 'InfoReceived') AS status, l.sub_status,
       coalesce(l.time, p.created_at) AS updated, l.eta_earliest, l.eta_latest,
       v.lon AS van_lon, v.lat AS van_lat,
       e.time AS e_time, e.status AS e_status, e.sub_status AS e_sub_status, e.detail
FROM parcel p
LEFT JOIN parcel_latest l ON l.tracking_number = p.tracking_number
LEFT JOIN stop s ON s.stop_id = p.stop_id
LEFT JOIN LATERAL (
    SELECT vl.lon, vl.lat FROM vehicle_latest vl
    WHERE vl.vehicle_id = l.vehicle_id AND l.status = 'OutForDelivery' AND l.eta IS NOT NULL
      AND NOT EXISTS (
        SELECT 1 FROM parcel_latest o JOIN parcel op ON op.tracking_number = o.tracking_number
        WHERE o.vehicle_id = l.vehicle_id AND o.eta < l.eta
          AND o.status NOT IN ('Delivered', 'AttemptFail', 'Expired')
          AND op.stop_id IS DISTINCT FROM p.stop_id)
) v ON true
LEFT JOIN LATERAL (
    SELECT pe.time, pe.status, pe.sub_status, pe.detail FROM parcel_event pe
    WHERE pe.tracking_number = p.tracking_number ORDER BY pe.time DESC LIMIT %s
) e ON true
WHERE p.tracking_number = %s
ORDER BY e.time DESC
"""


def view_from_rows(rows: Sequence[Mapping[str, Any]]) -> TrackView:
    """The query's rows (one per event, or one with no event) as a :class:`TrackView`."""
    first = rows[0]
    events = [Event(r["e_time"], r["e_status"], r["e_sub_status"], r["detail"] or {})
              for r in rows if r["e_time"] is not None]  # fmt: skip
    if not any(e.status == "InfoReceived" for e in events):
        # the manifest load itself (no parcel_event marks it), always the oldest entry:
        # device clocks, or a replayed day, may put events before the row's created_at
        created: datetime = first["created_at"]
        at = min(created, events[-1].time) if events else created
        events.append(Event(at, "InfoReceived", "InfoReceived_001"))
    dist: float | None = None
    if first["van_lon"] is not None and first["geofence"] is not None:
        lon, lat = stop_center(first["geofence"])
        d = float(haversine_m(first["van_lon"], first["van_lat"], lon, lat))
        dist = d if math.isfinite(d) else None
    return TrackView(
        tracking_number=first["tracking_number"], status=first["status"],
        sub_status=first["sub_status"], updated=first["updated"], events=events,
        stop_name=first["stop_name"], promised_by=first["promised_by"],
        eta_earliest=first["eta_earliest"], eta_latest=first["eta_latest"],
        driver_dist_m=dist,
    )  # fmt: skip


async def _fetch(p: AsyncConnectionPool, tracking_number: str) -> TrackView | None:
    async with p.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(QUERY, (MAX_EVENTS, tracking_number))
        rows = await cur.fetchall()
    return view_from_rows(rows) if rows else None


@router.get("/track/{tracking_number:path}", response_class=HTMLResponse,
            summary="The customer's tracking page (public HTML: status, ETA window, timeline)",
            responses={404: {"description": "no such parcel (unknown or malformed number)",
                             "content": {"text/html": {}}},
                       503: {"description": "the database is unavailable",
                             "content": {"text/html": {}}}})  # fmt: skip
async def track_page(request: Request, tracking_number: str) -> HTMLResponse:
    brand = Brand.from_settings(request.state.settings)
    headers = security_headers(brand)
    valid = TRACKING.fullmatch(tracking_number) is not None
    try:
        # a malformed number takes the same query: '' is never a tracking number
        view = await _fetch(pool(request), tracking_number if valid else "")
    except psycopg.OperationalError:  # pool timeouts included
        return HTMLResponse(render_unavailable(brand), status_code=503,
                            headers={**headers, "Retry-After": "30"})  # fmt: skip
    if view is None:
        return HTMLResponse(render_not_found(brand), status_code=404, headers=headers)
    now = datetime.now(UTC)
    return HTMLResponse(render_track(view, brand, now), headers=headers)
