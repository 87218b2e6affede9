"""OwnTracks JSON, as the apps publish it to ``owntracks/{user}/{device}``.

Only ``_type: "location"`` carries a fix: ``lat``, ``lon`` (degrees) and ``tst`` (epoch
seconds) are required; ``vel`` (km/h), ``cog`` (deg), ``acc`` (m) and ``alt`` (m) are
optional. Every other ``_type`` (lwt, transition, waypoint(s), card, cmd, status,
steps, beacon, configuration, ...) gives ``[]``, except ``encrypted``, which raises:
we hold no key, and dropping a user's whole track silently would hide the fault.

Missing and unknown values: the booklet says the apps omit ``acc``, ``alt``, ``cog``,
``vac`` and ``vel`` when they are 0, but other publishers (Greenwich, qtripp, homebrew
devices) omit what they do not measure, and the booklet also notes that some Android
devices always report 0 for ``alt`` and ``vel``. An omitted field is therefore NaN
("unknown"), not 0: "stopped" is a claim that dwell and ETA logic would act on. A
negative value (iOS sends ``vel: -1`` and ``cog: -1``) is NaN too, except ``alt``, which
may be below sea level. An explicit 0 stays 0. The position 0/0 gives ``[]``.
"""

from __future__ import annotations

import json
import math

from devices.errors import DecodeError, FieldError
from devices.records import US_PER_S, GpsFix

_KMH_TO_MPS = 1000.0 / 3600.0
_TST_MIN = 946_684_800  # 2000-01-01
_TST_MAX = 4_102_444_800  # 2100-01-01


def decode(payload: bytes) -> list[GpsFix]:
    """Decode one OwnTracks message; ``[]`` for message types that carry no fix."""
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise FieldError(f"owntracks: not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise FieldError(f"owntracks: expected a JSON object, got {type(msg).__name__}")
    kind = msg.get("_type")
    if not isinstance(kind, str):
        raise FieldError(f"owntracks: _type is missing or not a string: {kind!r}")
    if kind == "encrypted":
        raise DecodeError("owntracks: encrypted payloads are not supported")
    if kind != "location":
        return []
    lat, lon = _number(msg, "lat"), _number(msg, "lon")
    tst = msg.get("tst")
    if not isinstance(tst, int) or isinstance(tst, bool):
        raise FieldError(f"owntracks: tst must be integer epoch seconds, got {tst!r}")
    if not _TST_MIN <= tst < _TST_MAX:
        raise FieldError(f"owntracks: tst {tst} is outside 2000..2100")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise FieldError(f"owntracks: position out of range: lat {lat}, lon {lon}")
    if lat == 0.0 and lon == 0.0:
        return []
    cog = _optional(msg, "cog")
    if cog > 360.0:
        raise FieldError(f"owntracks: cog {cog} out of range")
    alt = msg.get("alt")
    return [
        GpsFix(
            ts_us=tst * US_PER_S,
            lon_deg=lon,
            lat_deg=lat,
            speed_mps=_optional(msg, "vel") * _KMH_TO_MPS,
            heading_deg=cog,
            acc_m=_optional(msg, "acc"),
            alt_m=math.nan if alt is None else _number(msg, "alt"),
        )
    ]


def _number(msg: dict[str, object], key: str) -> float:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"owntracks: {key} must be a number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:  # an int too big for a float
        result = math.inf
    if not math.isfinite(result):
        raise FieldError(f"owntracks: {key} is not finite")
    return result


def _optional(msg: dict[str, object], key: str) -> float:
    """An optional non-negative field: missing or negative (-1 = unknown) gives NaN."""
    if msg.get(key) is None:
        return math.nan
    value = _number(msg, key)
    return value if value >= 0.0 else math.nan
