"""The OsmAnd / Traccar Client HTTP protocol (Traccar's ``osmand`` port 5055).

Two request forms; the HTTP handler picks one and owns the device lookup and response:

* query or form parameters (GET, or POST ``application/x-www-form-urlencoded``):
  :func:`decode_query`. ``speed`` is in **knots** here.
* a JSON body (Traccar Client 9 and later, ``application/json``): :func:`decode_json`.
  ``speed`` is in **m/s** here; negative speed or heading means unknown.

:func:`decode_request` takes either as one byte string, as it is stored (the JSON body,
or the query string and the form body joined by ``&``).

A request with no position (only ``cell``/``wifi``), with ``valid`` other than
``true``/``1``, or at 0/0, gives a message with ``fixes == []``. Only the fields below
are kept; other keys (``cell``, ``wifi``, ``driverUniqueId``, vendor extras) are
ignored rather than collected in an attribute bag.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from urllib.parse import parse_qsl

from devices.errors import DecodeError, FieldError
from devices.records import US_PER_S, GpsFix

KNOT_MPS = 1852.0 / 3600.0
_TS_MIN_US = 946_684_800 * US_PER_S  # 2000-01-01
_TS_MAX_US = 4_102_444_800 * US_PER_S  # 2100-01-01
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True, slots=True)
class OsmandMessage:
    """One request: the device's own id (not yet mapped to a vehicle) and its fixes."""

    device_id: str
    fixes: list[GpsFix] = field(default_factory=list)
    battery_pct: float = math.nan  # 0..100; NaN when not sent or unknown
    charging: bool | None = None


def decode_query(
    params: Mapping[str, str] | list[tuple[str, str]],
    *,
    tz: tzinfo = UTC,
    now_us: int | None = None,
) -> OsmandMessage:
    """Decode query or form parameters. A repeated key keeps its last value.

    ``tz`` is the zone of a ``yyyy-MM-dd HH:mm:ss`` timestamp (and of an ISO one without
    an offset). ``now_us`` stands in for a missing ``timestamp``, as Traccar uses the
    server time; without it a missing timestamp raises :class:`FieldError`.
    """
    try:
        return _query(dict(params), tz, now_us)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise FieldError(f"osmand: malformed parameter: {exc}") from exc


def decode_request(raw: bytes, *, json_mode: bool, now_us: int | None = None) -> OsmandMessage:
    """Decode a request as one byte string: the JSON body (``json_mode``), or else the
    query string and the form body joined by ``&`` (``now_us`` as in :func:`decode_query`)."""
    if json_mode:
        return decode_json(raw)
    params = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return decode_query(params, now_us=now_us)


def decode_json(body: bytes) -> OsmandMessage:
    """Decode a Traccar Client JSON body; ``location`` may be one object or a list."""
    try:
        return _json(body)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise FieldError(f"osmand: malformed JSON body: {exc}") from exc


def _query(p: dict[str, str], tz: tzinfo, now_us: int | None) -> OsmandMessage:
    device_id = p.get("id") or p.get("deviceid")
    if not device_id:
        raise FieldError("osmand: id or deviceid is required")
    battery_pct, charge = _percent(_decimal(p, "batt")), p.get("charge")
    charging = None if charge is None else charge.lower() in ("true", "1")
    fixes: list[GpsFix] = []
    if "location" in p:
        parts = p["location"].split(",")
        if len(parts) != 2:
            raise FieldError(f"osmand: location must be 'lat,lon', got {p['location']!r}")
        p["lat"], p["lon"] = parts
    # No lat/lon at all (cell / wifi only) is a valid request without a position.
    # Traccar: valid is Boolean.parseBoolean(value) || "1".equals(value).
    if ("lat" in p or "lon" in p) and p.get("valid", "true").lower() in ("true", "1"):
        if "timestamp" in p:
            ts_us = _timestamp_us(p["timestamp"], tz)
        elif now_us is not None:
            ts_us = now_us
        else:
            raise FieldError("osmand: timestamp is missing and no receive time was given")
        fix = GpsFix(
            ts_us,
            lon_deg=_decimal(p, "lon", signed=True),
            lat_deg=_decimal(p, "lat", signed=True),
            speed_mps=_decimal(p, "speed") * KNOT_MPS,
            heading_deg=_decimal(p, "bearing" if "bearing" in p else "heading"),
            acc_m=_decimal(p, "accuracy"),
            alt_m=_decimal(p, "altitude", signed=True),
            hdop=_decimal(p, "hdop"),
        )
        fixes = _checked(fix)
    return OsmandMessage(device_id, fixes, battery_pct, charging)


def _decimal(p: dict[str, str], key: str, *, signed: bool = False) -> float:
    """A decimal parameter; missing or empty gives NaN, and so does a negative unless
    ``signed`` (clients send -1 for unknown)."""
    value = p.get(key, "")
    if not value:
        return math.nan
    if not _DECIMAL.fullmatch(value):  # float() would also take "nan", "inf", "1_0"
        raise FieldError(f"osmand: {key} {value!r} is not a decimal number")
    number = float(value)
    if not math.isfinite(number):
        raise FieldError(f"osmand: {key} {value!r} is not finite")
    return number if number >= 0.0 or signed else math.nan


def _percent(value: float) -> float:
    """A battery level; outside 0..100 (-1 = unknown, or a client bug) gives NaN."""
    return value if 0.0 <= value <= 100.0 else math.nan


def _timestamp_us(value: str, tz: tzinfo) -> int:
    if value.isascii() and value.isdigit():
        n = int(value)
        return n * 1000 if n > 2**31 else n * US_PER_S  # milliseconds if > 2^31
    if "T" in value:
        t = datetime.fromisoformat(value)
    else:
        t = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return _datetime_us(t)


def _datetime_us(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def _checked(fix: GpsFix) -> list[GpsFix]:
    """Range checks shared by both forms; ``[]`` for the no-fix position 0/0."""
    if not _TS_MIN_US <= fix.ts_us < _TS_MAX_US:
        raise FieldError(f"osmand: time {fix.ts_us} us is outside 2000..2100")
    lat, lon = fix.lat_deg, fix.lon_deg
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also catches NaN
        raise FieldError(f"osmand: position missing or out of range: lat {lat}, lon {lon}")
    if fix.heading_deg > 360.0:
        raise FieldError(f"osmand: heading {fix.heading_deg} out of range")
    return [] if lat == 0.0 and lon == 0.0 else [fix]


def _json(body: bytes) -> OsmandMessage:
    root = json.loads(body)
    if not isinstance(root, dict):
        raise FieldError(f"osmand: expected a JSON object, got {type(root).__name__}")
    device_id = root.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise FieldError(f"osmand: device_id must be a non-empty string, got {device_id!r}")
    locations = root.get("location")
    if isinstance(locations, dict):
        locations = [locations]
    if not isinstance(locations, list) or not all(isinstance(x, dict) for x in locations):
        raise FieldError("osmand: location must be an object or a list of objects")
    fixes = [f for loc in locations for f in _json_fix(loc)]
    battery_pct, charging = math.nan, None
    if locations and isinstance(battery := locations[-1].get("battery"), dict):
        level = _json_number(battery, "level")
        battery_pct = _percent(level * 100.0)
        is_charging = battery.get("is_charging")
        charging = is_charging if isinstance(is_charging, bool) else None
    return OsmandMessage(device_id, fixes, battery_pct, charging)


def _json_fix(loc: dict[str, object]) -> list[GpsFix]:
    stamp, coords = loc.get("timestamp"), loc.get("coords")
    if not isinstance(stamp, str) or not isinstance(coords, dict):
        raise FieldError("osmand: location needs a timestamp string and a coords object")
    t = datetime.fromisoformat(stamp)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    speed, heading = _json_number(coords, "speed"), _json_number(coords, "heading")
    accuracy = _json_number(coords, "accuracy")
    fix = GpsFix(
        _datetime_us(t),
        lon_deg=_json_number(coords, "longitude", required=True),
        lat_deg=_json_number(coords, "latitude", required=True),
        speed_mps=speed if speed >= 0.0 else math.nan,
        heading_deg=heading if heading >= 0.0 else math.nan,
        acc_m=accuracy if accuracy >= 0.0 else math.nan,
        alt_m=_json_number(coords, "altitude"),
    )
    return _checked(fix)


def _json_number(obj: dict[str, object], key: str, *, required: bool = False) -> float:
    value = obj.get(key)
    if value is None and not required:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"osmand: {key} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise FieldError(f"osmand: {key} is not finite")
    return number
