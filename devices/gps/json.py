"""milepost's own GPS JSON (topic ``fleet/{vehicle_id}/gps``).

One object or an array of objects. ``ts`` is an RFC 3339 string or Unix seconds;
``lat`` and ``lon`` are required; ``speed`` (m/s), ``heading`` (deg), ``acc`` (m),
``alt`` (m), ``sats`` and ``seq`` are optional.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from devices.errors import DecodeError, FieldError
from devices.records import GPS_FIX_DTYPE, US_PER_S, GpsFix

_MAX_FIXES = 100_000
_TS_MAX_S = 4_102_444_800  # 2100-01-01: keeps microseconds well inside int64


def _number(obj: dict[str, Any], key: str, *, required: bool = False) -> float:
    value = obj.get(key)
    if value is None:
        if required:
            raise FieldError(f"missing {key!r}")
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"{key!r} must be a number, got {type(value).__name__}")
    return float(value)


def _integer(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"{key!r} must be an integer, got {value!r}")
    return value


def parse_ts_us(value: Any) -> int:
    """RFC 3339 string (with offset) or Unix seconds number -> epoch microseconds."""
    if isinstance(value, bool):
        raise FieldError("'ts' must be a string or a number")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < _TS_MAX_S:
            raise FieldError(f"'ts' {value!r} is not Unix seconds between 1970 and 2100")
        return round(value * US_PER_S)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as exc:
            raise FieldError(f"'ts' is not RFC 3339: {value!r}") from exc
        if dt.tzinfo is None:
            raise FieldError(f"'ts' has no UTC offset: {value!r}")
        try:
            whole = int(dt.timestamp())
        except (OverflowError, ValueError, OSError) as exc:
            raise FieldError(f"'ts' {value!r} is out of range") from exc
        if not 0 <= whole < _TS_MAX_S:  # the same range as a number: 1970 to 2100
            raise FieldError(f"'ts' {value!r} is not between 1970 and 2100")
        return whole * US_PER_S + dt.microsecond
    if value is None:
        raise FieldError("missing 'ts'")
    raise FieldError(f"'ts' must be a string or a number, got {type(value).__name__}")


def _row(obj: Any) -> tuple[int, float, float, float, float, float, float, int, float, int]:
    """One fix as a row of GPS_FIX_DTYPE (field order of the dtype)."""
    if not isinstance(obj, dict):
        raise FieldError(f"a fix must be a JSON object, got {type(obj).__name__}")
    return (
        parse_ts_us(obj.get("ts")),
        _number(obj, "lon", required=True),
        _number(obj, "lat", required=True),
        _number(obj, "speed"),
        _number(obj, "heading"),
        _number(obj, "acc"),
        _number(obj, "alt"),
        _integer(obj, "sats"),
        math.nan,  # hdop: not in our JSON
        _integer(obj, "seq"),
    )


def decode_array(payload: bytes) -> NDArray[Any]:
    """Decode one JSON fix or an array of fixes straight into a GPS_FIX_DTYPE array
    (the ingest path: no GpsFix objects). Any malformed element fails the payload."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > _MAX_FIXES:
        raise FieldError(f"too many fixes in one payload ({len(items)} > {_MAX_FIXES})")
    try:
        rows = [_row(item) for item in items]
    except DecodeError as exc:
        if len(items) == 1:
            raise
        bad = next(i for i, item in enumerate(items) if not _valid(item))
        raise type(exc)(f"fix {bad}: {exc}") from exc
    return np.array(rows, dtype=GPS_FIX_DTYPE)


def _valid(item: Any) -> bool:
    try:
        _row(item)
    except DecodeError:
        return False
    return True


def decode(payload: bytes) -> list[GpsFix]:
    """Decode one JSON fix or an array of fixes; any malformed element fails the payload."""
    fixes = []
    for ts, lon, lat, speed, heading, acc, alt, sats, hdop, seq in decode_array(payload).tolist():
        fixes.append(GpsFix(int(ts), lon, lat, _nan(speed), _nan(heading), _nan(acc), _nan(alt),
                            int(sats), _nan(hdop), int(seq)))  # fmt: skip
    return fixes


def _nan(x: float) -> float:
    """math.nan itself for a missing value, as GpsFix's defaults (NaN != NaN otherwise)."""
    return math.nan if x != x else float(x)


def _fix_object(f: GpsFix) -> dict[str, Any]:
    obj: dict[str, Any] = {"ts": f.ts_us / US_PER_S, "lat": f.lat_deg, "lon": f.lon_deg}
    for key, value in (("speed", f.speed_mps), ("heading", f.heading_deg), ("acc", f.acc_m),
                       ("alt", f.alt_m)):  # fmt: skip
        if not math.isnan(value):
            obj[key] = value
    if f.sats >= 0:
        obj["sats"] = f.sats
    if f.seq >= 0:
        obj["seq"] = f.seq
    return obj


def encode(fixes: list[GpsFix]) -> bytes:
    """The inverse of :func:`decode`: one object for one fix, else an array."""
    if len(fixes) == 1:
        return orjson.dumps(_fix_object(fixes[0]))
    return orjson.dumps([_fix_object(f) for f in fixes])
