"""The tracking page's pure parts: the customer's sentences for every status and
sub-status milepost emits (docs/lifecycle.md), the ETA window text with its rounding and
time zones, the driver's distance, the branding and headers, and the escaping of hostile
text. No database, no mocks: plain values in, strings out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.app import create_app
from api.routes.track import (
    DELAY,
    Brand,
    Event,
    TrackView,
    contrast,
    day_label,
    distance_text,
    eta_text,
    headline,
    notes,
    photo_link,
    promised_text,
    render_not_found,
    render_track,
    security_headers,
    view_from_rows,
)
from milepost.settings import Settings

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday

# docs/lifecycle.md, "Statuses and sub-statuses": every pair milepost emits
EMITTED = {
    ("InfoReceived", "InfoReceived_001"): "We have your parcel's details",
    ("InTransit", "InTransit_002"): "At our local hub",
    ("InTransit", "InTransit_007"): "Loaded onto a delivery van",
    ("OutForDelivery", "OutForDelivery_001"): "Out for delivery",
    ("AttemptFail", "AttemptFail_001"): "We tried to deliver your parcel",
    ("Delivered", "Delivered_001"): "Delivered",
    ("Delivered", "Delivered_003"): "Delivered",
    ("Exception", "Exception_MISLOAD"): DELAY,
    ("Exception", "Exception_LEFT_BEHIND"): DELAY,
    ("Exception", "Exception_WRONG_DROP"): DELAY,
    ("Exception", "Exception_COLD_CHAIN"): DELAY,
    ("Exception", "Exception_LATE"): "Running late",
    ("Exception", "Exception_UNBOUND"): DELAY,
}
INTERNAL = ("MISLOAD", "LEFT_BEHIND", "WRONG_DROP", "COLD_CHAIN", "UNBOUND", "LATE", "_0",
            "Exception", "InTransit", "OutForDelivery", "AttemptFail", "InfoReceived")


def utc(h: int, m: int, s: int = 0, day: int = 24, month: int = 11) -> datetime:
    return datetime(2026, month, day, h, m, s, tzinfo=UTC)


def view(**kw: Any) -> TrackView:
    base: dict[str, Any] = {"tracking_number": "MP100200300", "status": "OutForDelivery",
                            "sub_status": "OutForDelivery_001", "updated": NOW}
    return TrackView(**{**base, **kw})


class Structure(HTMLParser):
    """Tags in order; fails on a closing tag that does not match its opening."""

    VOID = frozenset({"meta", "img", "br", "link", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def names(self) -> list[str]:
        return [t for t, _ in self.tags]


def parse(html: str) -> Structure:
    p = Structure()
    p.feed(html)
    p.close()
    assert p.stack == [], f"unclosed: {p.stack}"
    return p


# ---------------------------------------------------------------- sentences


@pytest.mark.parametrize(("pair", "sentence"), EMITTED.items(), ids=[p[1] for p in EMITTED])
def test_every_emitted_status_reads_as_a_customer_sentence(
    pair: tuple[str, str], sentence: str
) -> None:
    status, sub_status = pair
    assert headline(status, sub_status) == sentence
    page = render_track(view(status=status, sub_status=sub_status,
                             events=[Event(NOW, status, sub_status)]), Brand(), NOW)  # fmt: skip
    text = " ".join(parse(page).text)
    assert sentence in text
    for word in INTERNAL:  # not in what a customer reads (the CSS is not text)
        assert word not in text.replace(sentence, ""), (pair, word)


def test_statuses_without_a_sub_status_and_unknown_ones_still_read_plainly() -> None:
    assert headline("InTransit", None) == "At our local hub"
    assert headline("Exception", None) == DELAY
    assert headline("Exception", "Exception_SOMETHING_NEW") == DELAY
    assert headline("Expired", None) == "No recent updates on your parcel"
    assert headline("Lost", "Lost_001") == "We have your parcel's details"


def test_a_proof_adds_who_signed_and_the_drivers_note_but_not_inferred_reasons() -> None:
    pod = {"evidence": "pod", "signed_by": " A. Smith ", "reason": "left at the door",
           "dist_m": 3.2, "far_from_stop": True}  # fmt: skip
    assert notes("Delivered", pod) == ["Signed for by A. Smith", "Left at the door"]
    assert notes("AttemptFail", {"evidence": "pod", "reason": "recipient not available"}) == [
        "Recipient not available"]
    # what the cargo reader made of a visit is milepost's inference, not the driver's word
    assert notes("AttemptFail", {"evidence": "cargo",
                                 "reason": "left the stop with the parcel aboard"}) == []
    assert notes("Exception", {"reason": "two vans at the dock", "candidates": 2}) == []
    assert notes("Delivered", {"evidence": "pod", "signed_by": "", "reason": None}) == []


@pytest.mark.parametrize(("url", "shown"), [
    ("https://pod.example.com/p/1.jpg", True),
    ("HTTPS://pod.example.com/p/1.jpg", True),
    ("http://pod.example.com/p/1.jpg", False),
    ("javascript:alert(1)", False),
    ("https:///no-host", False),
    ("//pod.example.com/p.jpg", False),
    ("data:image/png;base64,AAAA", False),
    (None, False),
    (42, False),
])  # fmt: skip
def test_only_an_https_photo_is_linked(url: object, shown: bool) -> None:
    assert (photo_link({"photo_url": url}) is not None) is shown


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(("lo", "hi", "tz", "text"), [
    # rounded outward to 5 minutes
    (utc(14, 12, 30), utc(14, 37, 1), UTC_ZONE, "Expected today between 14:10 and 14:40 UTC"),
    (utc(14, 10), utc(14, 40), UTC_ZONE, "Expected today between 14:10 and 14:40 UTC"),
    (utc(14, 14, 59), utc(14, 35, 0, ), UTC_ZONE, "Expected today between 14:10 and 14:35 UTC"),
    (utc(14, 37, 1), utc(14, 12, 30), UTC_ZONE, "Expected today between 14:10 and 14:40 UTC"),
    # shown in the configured zone, with its abbreviation (winter and summer)
    (utc(13, 12), utc(13, 38), BERLIN, "Expected today between 14:10 and 14:40 CET"),
    (utc(12, 12, month=7, day=21), utc(12, 38, month=7, day=21), BERLIN,
     "Expected today between 14:10 and 14:40 CEST"),
    # +05:45: the 5-minute grid is the same in the zone
    (utc(8, 27), utc(8, 53), ZoneInfo("Asia/Kathmandu"),
     "Expected today between 14:10 and 14:40 +0545"),
    # another day: its weekday
    (utc(9, 0, day=25), utc(9, 30, day=25), UTC_ZONE,
     "Expected on Wednesday between 09:00 and 09:30 UTC"),
    (utc(9, 0, day=5, month=12), utc(9, 30, day=5, month=12), UTC_ZONE,
     "Expected on Saturday 5 December between 09:00 and 09:30 UTC"),
    # over midnight: both days
    (utc(23, 48), utc(0, 21, day=25), UTC_ZONE,
     "Expected between today 23:45 and Wednesday 00:25 UTC"),
    # a window that rounds to one instant
    (utc(14, 10), utc(14, 10), UTC_ZONE, "Expected today at about 14:10 UTC"),
])  # fmt: skip
def test_eta_window_text(lo: datetime, hi: datetime, tz: ZoneInfo, text: str) -> None:
    now = lo.replace(hour=11, minute=0) if lo.month == 7 else NOW
    assert eta_text(lo, hi, now, tz) == text


def test_eta_today_is_the_day_in_the_configured_zone_not_in_utc() -> None:
    ny = ZoneInfo("America/New_York")
    now = utc(3, 0, day=25)  # 22:00 on the 24th in New York
    assert eta_text(utc(4, 2, day=25), utc(4, 28, day=25), now, ny) == (
        "Expected today between 23:00 and 23:30 EST")
    tokyo = ZoneInfo("Asia/Tokyo")  # 12:00 on the 25th in Tokyo
    assert eta_text(utc(15, 0, day=24), utc(15, 30, day=24), utc(3, 0, day=25), tokyo) == (
        "Expected today between 00:00 and 00:30 JST")


def test_eta_across_the_autumn_clock_change_names_both_zones() -> None:
    # 2026-10-25 03:00 CEST is 02:00 CET: 00:50 UTC is 02:50 CEST, 01:10 UTC is 02:10 CET
    lo, hi = utc(0, 48, day=25, month=10), utc(1, 12, day=25, month=10)
    assert eta_text(lo, hi, utc(0, 0, day=25, month=10), BERLIN) == (
        "Expected today between 02:45 CEST and 02:15 CET")


def test_promised_and_day_labels() -> None:
    assert promised_text(utc(17, 0), NOW, BERLIN) == "Promised by 18:00 CET today"
    assert promised_text(utc(17, 0, day=26), NOW, BERLIN) == "Promised by 18:00 CET on Thursday"
    assert day_label(NOW.date() - timedelta(days=1), NOW.date()) == "Monday"
    assert day_label(datetime(2027, 1, 4).date(), NOW.date()) == "Monday 4 January 2027"


@pytest.mark.parametrize(("dist_m", "text"), [
    (0.0, "Your driver is less than 0.5 km away"),
    (249.0, "Your driver is less than 0.5 km away"),
    (251.0, "Your driver is about 0.5 km away"),
    (1240.0, "Your driver is about 1 km away"),
    (1260.0, "Your driver is about 1.5 km away"),
    (2100.0, "Your driver is about 2 km away"),
    (12_760.0, "Your driver is about 13 km away"),
    (float("nan"), None),
    (-1.0, None),
])  # fmt: skip
def test_driver_distance_is_rounded_to_half_a_kilometre(dist_m: float, text: str | None) -> None:
    assert distance_text(dist_m) == text


# ---------------------------------------------------------------- branding and escaping


def test_hostile_text_is_escaped_everywhere_it_is_shown() -> None:
    hostile = '<script>alert("x")</script>'
    brand = Brand(name=f"Acme {hostile}", color="#1f5fbf")
    detail = {"evidence": "pod", "signed_by": hostile, "reason": f"at the door {hostile}",
              "photo_url": 'https://pod.example.com/p.jpg" onmouseover="alert(1)'}  # fmt: skip
    page = render_track(view(status="Delivered", sub_status="Delivered_003", stop_name=hostile,
                             events=[Event(NOW, "Delivered", "Delivered_003", detail)]),
                        brand, NOW)  # fmt: skip
    assert "<script" not in page and 'onmouseover="' not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5
    p = parse(page)
    links = [a for t, a in p.tags if t == "a" and (a.get("href") or "").startswith("https:")]
    assert links == [{"href": 'https://pod.example.com/p.jpg" onmouseover="alert(1)',
                      "rel": "noopener noreferrer"}]  # one attribute value, not two attributes
    assert hostile in " ".join(p.text)  # shown as text, as written


def test_page_structure_is_semantic_and_self_contained() -> None:
    events = [Event(NOW, "OutForDelivery", "OutForDelivery_001"),
              Event(NOW - timedelta(hours=1), "InTransit", "InTransit_007"),
              Event(NOW - timedelta(hours=2), "InTransit", "InTransit_002")]  # fmt: skip
    page = render_track(view(events=events, eta_earliest=utc(14, 12), eta_latest=utc(14, 38),
                             promised_by=utc(18, 0), driver_dist_m=2100.0), Brand(), NOW)
    p = parse(page)
    assert page.startswith("<!doctype html>\n<html lang=\"en\">")
    assert p.names().count("h1") == 1 and "ol" in p.names() and "main" in p.names()
    assert ("meta", {"http-equiv": "refresh", "content": "60"}) in p.tags
    assert ("meta", {"name": "viewport",
                     "content": "width=device-width, initial-scale=1"}) in p.tags
    # nothing loaded from anywhere: no script, no stylesheet link, no font, no image
    assert not {"script", "link", "img", "iframe"} & set(p.names())
    assert "url(" not in page and "@import" not in page and "@font-face" not in page
    items = [" ".join(t.split()) for t in p.text if t.strip()]
    at = items.index("History")
    assert items[at + 1:at + 7] == ["Today, 12:00 UTC", "Out for delivery",
                                    "Today, 11:00 UTC", "Loaded onto a delivery van",
                                    "Today, 10:00 UTC", "At our local hub"]  # newest first
    assert "Expected today between 14:10 and 14:40 UTC" in items
    assert "Your driver is about 2 km away" in items
    assert "Promised by 18:00 UTC today" in items
    times = [a["datetime"] for t, a in p.tags if t == "time"]
    assert times[0] == "2026-11-24T12:00:00+00:00"


def test_after_delivery_the_proof_replaces_eta_promise_and_refresh() -> None:
    detail = {"evidence": "pod", "signed_by": "A. Smith", "reason": "left at the door",
              "photo_url": "http://pod.example.com/p.jpg"}  # fmt: skip
    page = render_track(view(status="Delivered", sub_status="Delivered_003",
                             eta_earliest=utc(14, 12), eta_latest=utc(14, 38),
                             promised_by=utc(18, 0), stop_name="12 Elm St",
                             events=[Event(utc(11, 32), "Delivered", "Delivered_003", detail)]),
                        Brand(tz=BERLIN), NOW)  # fmt: skip
    text = [" ".join(t.split()) for t in parse(page).text if t.strip()]
    at = text.index("Delivery")
    assert text[at + 1:at + 7] == ["Delivered", "Today, 12:32 CET", "Signed for by", "A. Smith",
                                   "Driver's note", "Left at the door"]  # fmt: skip
    assert "Delivered to 12 Elm St" in text
    assert "Expected" not in page and "Promised" not in page and "refresh" not in page
    assert "Photo" not in text  # an http photo is not linked


def test_not_found_is_one_constant_page() -> None:
    brand = Brand("Acme", "#0b6e4f", None, BERLIN)
    page = render_not_found(brand)
    assert page == render_not_found(Brand("Acme", "#0b6e4f", None, BERLIN))
    p = parse(page)
    assert "We could not find that parcel" in p.text
    assert "refresh" not in page and "MP" not in page


@pytest.mark.parametrize(("logo", "shown", "img_src"), [
    (None, False, "'self'"),
    ("/static/logo.svg", True, "'self'"),
    ("https://cdn.example.com/brand/logo.png", True, "https://cdn.example.com"),
    ("https://CDN.example.com:8443/logo.png", True, "https://cdn.example.com:8443"),
    ("//cdn.example.com/logo.png", False, "'self'"),
    ("javascript:alert(1)", False, "'self'"),
    ("https://evil.example;script-src */x.png", False, "'self'"),
    ("https://user:pw@cdn.example.com/logo.png", False, "'self'"),
])  # fmt: skip
def test_logo_and_content_security_policy(logo: str | None, shown: bool, img_src: str) -> None:
    brand = Brand("Acme", "#0b6e4f", logo)
    csp = security_headers(brand)["Content-Security-Policy"]
    assert csp == (f"default-src 'none'; style-src 'unsafe-inline'; img-src {img_src};"
                   " base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    imgs = [a for t, a in parse(render_not_found(brand)).tags if t == "img"]
    assert imgs == ([{"src": logo, "alt": "Acme"}] if shown else [])


def test_header_and_accent_colours_keep_contrast() -> None:
    assert contrast("#ffffff", "#000000") == pytest.approx(21.0)
    for color in ("#ffcc00", "#1f5fbf", "#00ff00", "#7f7f7f", "#000000", "#ffffff"):
        b = Brand(color=color)
        assert contrast(b.on_color, color) >= 4.5, color
        assert contrast(b.accent_text, "#ffffff") >= 4.5, color
    assert Brand(color="#ffcc00").on_color == "#000000"
    assert Brand(color="#1f5fbf").on_color == "#ffffff"
    with pytest.raises(ValueError, match="rrggbb"):
        Brand(color="red;}body{display:none")


def test_brand_comes_from_the_settings() -> None:
    s = Settings(brand_name="Acme", brand_color="#0B6E4F", brand_logo_url="/static/a.svg",
                 timezone="Europe/Berlin")  # fmt: skip
    assert Brand.from_settings(s) == Brand("Acme", "#0B6E4F", "/static/a.svg", BERLIN)


# ---------------------------------------------------------------- rows -> view


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tracking_number": "MP100200300", "promised_by": None, "created_at": utc(6, 0),
        "stop_name": "12 Elm St", "status": "OutForDelivery", "sub_status": "OutForDelivery_001",
        "updated": utc(9, 0), "eta_earliest": None, "eta_latest": None,
        "geofence": {"type": "Point", "coordinates": [13.4050, 52.5200]},
        "van_lon": None, "van_lat": None,
        "e_time": None, "e_status": None, "e_sub_status": None, "detail": None}  # fmt: skip
    return {**base, **kw}


def test_the_manifest_load_opens_the_timeline() -> None:
    v = view_from_rows([row(e_time=utc(9, 0), e_status="OutForDelivery",
                            e_sub_status="OutForDelivery_001", detail={"evidence": "plan"}),
                        row(e_time=utc(8, 0), e_status="InTransit", e_sub_status="InTransit_002",
                            detail=None)])  # fmt: skip
    assert [(e.time, e.sub_status) for e in v.events] == [
        (utc(9, 0), "OutForDelivery_001"), (utc(8, 0), "InTransit_002"),
        (utc(6, 0), "InfoReceived_001")]  # fmt: skip
    assert v.driver_dist_m is None  # no van position joined: not the van's next stop
    # events older than the manifest row (device clocks, a replayed day): still the
    # oldest entry, at the oldest event's time
    late = view_from_rows([row(created_at=utc(10, 0), e_time=utc(9, 0), e_status="InTransit",
                               e_sub_status="InTransit_002")])  # fmt: skip
    assert [(e.time, e.sub_status) for e in late.events] == [
        (utc(9, 0), "InTransit_002"), (utc(9, 0), "InfoReceived_001")]
    assert [e.sub_status for e in view_from_rows([row()]).events] == ["InfoReceived_001"]


def test_the_drivers_distance_is_to_the_stops_centre() -> None:
    # 0.018 deg of latitude north of the stop: 2.0 km
    v = view_from_rows([row(van_lon=13.4050, van_lat=52.5380)])
    assert v.driver_dist_m == pytest.approx(2001.5, abs=1.0)
    square = {"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.41, 52.51], [13.41, 52.53],
                                                  [13.40, 52.53], [13.40, 52.51]]]}  # fmt: skip
    v = view_from_rows([row(geofence=square, van_lon=13.405, van_lat=52.52)])
    assert v.driver_dist_m == pytest.approx(0.0, abs=0.01)
    assert not hasattr(v, "vehicle_id")


def test_the_page_is_in_the_openapi_document_as_html() -> None:
    doc = create_app(Settings()).openapi()
    op = doc["paths"]["/track/{tracking_number}"]["get"]
    assert op["summary"].startswith("The customer's tracking page")
    assert "text/html" in op["responses"]["200"]["content"]
    assert "text/html" in op["responses"]["404"]["content"]
    assert "security" not in op
