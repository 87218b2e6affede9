"""milepost's own GPS JSON (topic ``fleet/{vehicle_id}/gps``).

One object or an array of objects. ``ts`` is an RFC 3339 string or Unix seconds;
``lat`` and ``lon`` are required; ``speed`` (m/s), ``heading`` (deg), ``acc`` (m),
``alt`` (m), ``sats`` and ``seq`` are optional.

:func:`decode` gives ``GpsFix`` records. The ingest path makes none: :func:`parse` at
receipt, then :func:`decode_parsed` over a whole batch of messages into one
``GPS_FIX_DTYPE`` array, column by column (one type check and one NumPy conversion per
column for all the batch's fixes; measured, a column pass costs about as much as NumPy's
fixed cost per call, so it pays over thousands of fixes, not over the 1 to 50 of one
message). Whatever the column pass does not take plainly, it leaves to the row decoder,
which gives every malformed message the same error as :func:`decode`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from devices.errors import DecodeError, FieldError
from devices.records import GPS_FIX_DTYPE, US_PER_S, GpsFix

_MAX_FIXES = 100_000
_TS_MAX_S = 4_102_444_800  # 2100-01-01: keeps microseconds well inside int64
# the integer fields' ranges: their GPS_FIX_DTYPE columns are int16 and int64
_SATS_MIN, _SATS_MAX = -(2**15), 2**15 - 1
_SEQ_MIN, _SEQ_MAX = -(2**63), 2**63 - 1
_INT_RANGE = {"sats": (_SATS_MIN, _SATS_MAX), "seq": (_SEQ_MIN, _SEQ_MAX)}

# ts_us, lon_deg, lat_deg, speed_mps, heading_deg, acc_m, alt_m, sats, hdop, seq
FixRow = tuple[int, float, float, float, float, float, float, int, float, int]


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
    lo, hi = _INT_RANGE[key]
    if not lo <= value <= hi:
        raise FieldError(f"{key!r} {value} is out of range [{lo}, {hi}]")
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


def _row(obj: Any) -> FixRow:
    """One fix as a row of GPS_FIX_DTYPE (field order of the dtype).

    Values of the expected exact type (orjson gives exact ``float``, ``int``, ``str``) are
    taken as they are; anything else goes through the checking functions above, which
    convert it or say what is wrong, field by field in dtype order."""
    if type(obj) is not dict:
        raise FieldError(f"a fix must be a JSON object, got {type(obj).__name__}")
    get = obj.get
    ts, lon, lat = get("ts"), get("lon"), get("lat")
    speed, heading, acc, alt = get("speed"), get("heading"), get("acc"), get("alt")
    sats, seq = get("sats"), get("seq")
    ts_us = round(ts * US_PER_S) if type(ts) is float and 0 <= ts < _TS_MAX_S else parse_ts_us(ts)
    if type(lon) is not float:
        lon = _number(obj, "lon", required=True)
    if type(lat) is not float:
        lat = _number(obj, "lat", required=True)
    if type(speed) is not float:
        speed = _number(obj, "speed")
    if type(heading) is not float:
        heading = _number(obj, "heading")
    if type(acc) is not float:
        acc = _number(obj, "acc")
    if type(alt) is not float:
        alt = _number(obj, "alt")
    if type(sats) is not int or not _SATS_MIN <= sats <= _SATS_MAX:
        sats = _integer(obj, "sats")
    if type(seq) is not int or not _SEQ_MIN <= seq <= _SEQ_MAX:
        seq = _integer(obj, "seq")
    return ts_us, lon, lat, speed, heading, acc, alt, sats, math.nan, seq


_NUMBER = frozenset((float, int))  # orjson gives exact types: bool is not among them
_NUMBER_OR_NONE = frozenset((float, int, type(None)))
_TS_TYPES = frozenset((float, int, str))
_INT = frozenset((int,))
_FIELDS = ("ts", "lon", "lat", "speed", "heading", "acc", "alt", "sats", "seq")
_FIELD_SET = frozenset(_FIELDS)
_FLOATS = (("lon", "lon_deg", True), ("lat", "lat_deg", True), ("speed", "speed_mps", False),
           ("heading", "heading_deg", False), ("acc", "acc_m", False),
           ("alt", "alt_m", False))  # fmt: skip


def _same_keys_columns(items: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]] | None:
    """The fields' columns when every fix has the same keys as the first (the usual case:
    one device, one encoder), else None. Each has all of the first's keys and as many."""
    first = items[0]
    if len(first) < 2:  # (itemgetter of one key gives values, not tuples)
        return None
    try:
        values = list(map(itemgetter(*first), items))
    except KeyError:
        return None
    if set(map(len, items)) != {len(first)}:
        return None
    return {key: column for key, column in zip(first, zip(*values, strict=True), strict=True)
            if key in _FIELD_SET}  # fmt: skip


def _columns(items: list[Any]) -> NDArray[Any] | None:
    """Fixes decoded column by column into a GPS_FIX_DTYPE array, or None when any value
    is not plainly valid (wrong type, out of range, a time string that does not parse):
    then :func:`_row` decodes them, for the same error on the same fix.

    The same results as :func:`_row` for every fix: the same checks per column, float
    and int conversion by NumPy, ``np.rint`` rounding half to even like ``round``."""
    n = len(items)
    if set(map(type, items)) != {dict}:
        return None
    columns = _same_keys_columns(items) if n > 1 else None
    if columns is None:  # fixes with different keys: ask each for each key
        have = Counter(chain.from_iterable(items))  # in how many fixes each key is
        columns = {key: tuple(map(dict.get, items, repeat(key)))  # None where missing
                   for key in _FIELDS if have.get(key)}  # fmt: skip
    out = np.empty(n, GPS_FIX_DTYPE)
    ts = columns.get("ts")
    if ts is None:
        return None
    kinds = set(map(type, ts))
    if kinds <= _NUMBER:
        seconds = np.array(ts, np.float64)  # exact: an integral ts below 2100 is < 2**53
        if not ((seconds >= 0) & (seconds < _TS_MAX_S)).all():
            return None
        out["ts_us"] = np.rint(seconds * US_PER_S)
    elif kinds <= _TS_TYPES:
        try:
            out["ts_us"] = [parse_ts_us(t) for t in ts]
        except DecodeError:
            return None
    else:
        return None
    for key, name, required in _FLOATS:
        values = columns.get(key)
        if values is None:
            if required:
                return None
            out[name] = math.nan
        elif set(map(type, values)) <= (_NUMBER if required else _NUMBER_OR_NONE):
            out[name] = values  # None -> NaN
        else:
            return None
    for key, (lo, hi) in _INT_RANGE.items():
        values = columns.get(key)
        if values is None:
            out[key] = -1
            continue
        kinds = set(map(type, values))
        if kinds != _INT:
            if not kinds <= {int, type(None)}:
                return None
            values = tuple(-1 if v is None else v for v in values)
        try:
            column = np.array(values, np.int64)
        except OverflowError:
            return None
        if column.min() < lo or column.max() > hi:
            return None
        out[key] = column
    out["hdop"] = math.nan  # not in our JSON
    return out


def parse(payload: bytes) -> list[Any]:
    """A payload's fixes as parsed JSON values, not yet checked (:func:`decode_parsed` does
    that). DecodeError if it is not JSON or holds too many fixes."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    items = doc if type(doc) is list else [doc]
    if len(items) > _MAX_FIXES:
        raise FieldError(f"too many fixes in one payload ({len(items)} > {_MAX_FIXES})")
    return items


def _rows(items: list[Any]) -> list[FixRow]:
    try:
        return [_row(item) for item in items]
    except DecodeError as exc:
        if len(items) == 1:
            raise
        bad = next(i for i, item in enumerate(items) if not _valid(item))
        raise type(exc)(f"fix {bad}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Decoded:
    """The fixes of several messages: ``fixes`` (GPS_FIX_DTYPE) holds ``counts[i]`` rows
    of message ``i`` after those of the messages before it; ``errors`` maps the index of
    each message that does not decode to why (it has no rows)."""

    fixes: NDArray[Any]
    counts: list[int]
    errors: dict[int, DecodeError]


def decode_parsed(messages: Sequence[list[Any]]) -> Decoded:
    """Decode the parsed fixes (:func:`parse`) of several messages at once (the ingest
    path: a batch's messages, column by column, no GpsFix objects). A malformed element
    fails its own message, with the error :func:`decode` would raise for it, and no other."""
    flat = messages[0] if len(messages) == 1 else list(chain.from_iterable(messages))
    fixes = _columns(flat) if flat else None
    if fixes is not None:
        return Decoded(fixes, [len(m) for m in messages], {})
    rows: list[FixRow] = []
    counts: list[int] = []
    errors: dict[int, DecodeError] = {}
    for i, items in enumerate(messages):
        try:
            mine = _rows(items)
        except DecodeError as exc:
            errors[i] = exc
            mine = []
        rows.extend(mine)
        counts.append(len(mine))
    return Decoded(np.array(rows, dtype=GPS_FIX_DTYPE), counts, errors)


def decode_array(payload: bytes) -> NDArray[Any]:
    """Decode one JSON fix or an array of fixes straight into a GPS_FIX_DTYPE array.
    Any malformed element fails the payload."""
    decoded = decode_parsed([parse(payload)])
    if decoded.errors:
        raise decoded.errors[0]
    return decoded.fixes


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
