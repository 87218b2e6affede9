"""NMEA 0183 text: RMC and GGA sentences from any talker (GP, GN, GL, GA, GB, BD, IN, ...).

One fix per receiver epoch (the UTC time of day in field 1):

* an RMC with status ``A`` gives the date, time, position, speed (knots) and course;
* a GGA with the same time adds altitude (MSL), satellites used and HDOP;
* RMC status ``V``, RMC FAA mode ``N``, GGA quality 0, an empty time, date or
  position, and the position 0/0 give no fix;
* a GGA with no RMC of the same time in the payload gives no fix: GGA has no date.

Sentences with a bad or missing checksum are skipped, as is anything between sentences
(comments, binary noise). If the payload holds sentence-like text but not one sentence
with a valid checksum, it raises :class:`ChecksumError`; with no sentence-like text at
all, :class:`FrameError`. A checksum-valid RMC or GGA with a malformed field raises
:class:`FieldError`: the device really sent it, so it goes to dead letter.

``pynmea2`` is not used: its field accessors return the raw string when a conversion
fails (a bare ``except``) and accept ``nan``/``inf``, so every value would need checking
again. Splitting on commas is shorter than that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import date
from functools import reduce

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.records import US_PER_S, GpsFix

KNOT_MPS = 1852.0 / 3600.0  # 0.514444... m/s

# `$` or `!`, an address (talker + type, or P + maker + type), printable fields
# (not `$`, `!`, `*`), then `*hh`. Bytes, so binary noise never fails to decode.
_SENTENCE = re.compile(
    rb"[$!](?P<body>[A-Z0-9]{4,6}(?:,[\x20\x22\x23\x25-\x29\x2b-\x7e]*)?)"
    rb"(?:\*(?P<cs>[0-9A-Fa-f]{2}))?"
)
_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(?:\.(\d{1,6})\d*)?")
_DATE = re.compile(r"(\d\d)(\d\d)(\d\d)")
_DEG_MIN = re.compile(r"(\d{1,3})(\d\d(?:\.\d+)?)")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_DAY = 86_400 * US_PER_S


@dataclass
class _Epoch:
    fix: GpsFix | None = None  # from the first valid RMC of this time
    alt_m: float = math.nan
    sats: int = -1
    hdop: float = math.nan
    vetoed: bool = False  # a GGA of this time says quality 0


def decode(payload: bytes) -> list[GpsFix]:
    """Decode one payload of NMEA sentences into one fix per epoch, in payload order."""
    try:
        return _decode(payload)
    except DecodeError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise FieldError(f"nmea: malformed sentence: {exc}") from exc


def _decode(payload: bytes) -> list[GpsFix]:
    epochs: dict[int, _Epoch] = {}
    valid = 0
    first_bad = ""
    for m in _SENTENCE.finditer(payload):
        body, cs = m["body"], m["cs"]
        computed = reduce(lambda a, b: a ^ b, body, 0)
        if cs is None:
            first_bad = first_bad or f"{body[:12]!r}...: no checksum"
            continue
        if (got := int(cs, 16)) != computed:
            first_bad = first_bad or f"{body[:12]!r}...: got 0x{got:02X}, computed 0x{computed:02X}"
            continue
        valid += 1
        fields = body.decode("ascii").split(",")
        kind = fields[0][2:] if len(fields[0]) == 5 and fields[0][0] != "P" else ""
        if kind == "RMC":
            _rmc(fields, epochs)
        elif kind == "GGA":
            _gga(fields, epochs)
    if not valid:
        if first_bad:
            raise ChecksumError(f"nmea: no sentence with a valid checksum (first: {first_bad})")
        raise FrameError("nmea: no NMEA sentence in payload")
    return [
        replace(e.fix, alt_m=e.alt_m, sats=e.sats, hdop=e.hdop)
        for e in epochs.values()
        if e.fix is not None and not e.vetoed
    ]


def _rmc(f: list[str], epochs: dict[int, _Epoch]) -> None:
    # RMC,time,status,lat,N/S,lon,E/W,knots,course,ddmmyy,magvar,E/W[,mode[,navstatus]]
    if len(f) < 10:
        raise FieldError(f"nmea: RMC has {len(f) - 1} fields, expected at least 9")
    if f[2] != "A" or (len(f) > 12 and f[12] == "N") or "" in (f[1], *f[3:7], f[9]):
        return
    tod_us = _time_of_day_us(f[1])
    epoch = epochs.setdefault(tod_us, _Epoch())
    if epoch.fix is not None:
        return  # another talker's RMC for the same epoch: the first one wins
    lat, lon = _coord(f[3], f[4], "NS", 90.0), _coord(f[5], f[6], "EW", 180.0)
    if lat == 0.0 and lon == 0.0:
        return
    speed = _number(f[7], "speed") * KNOT_MPS if f[7] else math.nan
    course = _number(f[8], "course") if f[8] else math.nan
    if speed < 0 or (not math.isnan(course) and not 0.0 <= course <= 360.0):
        raise FieldError(f"nmea: RMC speed {f[7]!r} or course {f[8]!r} out of range")
    epoch.fix = GpsFix(_date_us(f[9]) + tod_us, lon, lat, speed, course)


def _gga(f: list[str], epochs: dict[int, _Epoch]) -> None:
    # GGA,time,lat,N/S,lon,E/W,quality,sats,hdop,alt,M,geoid sep,M,dgps age,station
    if len(f) < 11:
        raise FieldError(f"nmea: GGA has {len(f) - 1} fields, expected at least 10")
    if not f[1] or not f[6]:
        return
    epoch = epochs.setdefault(_time_of_day_us(f[1]), _Epoch())
    if _integer(f[6], "quality") == 0:
        epoch.vetoed = True
        return
    if f[7]:
        epoch.sats = _integer(f[7], "satellites")
    if f[8]:
        epoch.hdop = _number(f[8], "hdop")
        if epoch.hdop < 0:
            raise FieldError(f"nmea: GGA hdop {f[8]!r} is negative")
    if f[9]:
        epoch.alt_m = _number(f[9], "altitude")


def _number(s: str, what: str) -> float:
    if not _NUMBER.fullmatch(s):  # float() would also take "nan", "inf", "1e9", "_"
        raise FieldError(f"nmea: {what} {s!r} is not a decimal number")
    value = float(s)
    if not math.isfinite(value):  # 309 digits or more: float() gives inf
        raise FieldError(f"nmea: {what} {s[:20]!r}... is too large")
    return value


def _integer(s: str, what: str) -> int:
    if not s.isascii() or not s.isdigit() or len(s) > 4:
        raise FieldError(f"nmea: {what} {s!r} is not a small unsigned integer")
    return int(s)


def _time_of_day_us(s: str) -> int:
    m = _TIME.fullmatch(s)
    if m is None or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 60:
        raise FieldError(f"nmea: time {s!r} is not hhmmss[.ss]")
    frac = int((m[4] or "").ljust(6, "0"))
    return ((int(m[1]) * 60 + int(m[2])) * 60 + int(m[3])) * US_PER_S + frac


def _date_us(s: str) -> int:
    """ddmmyy, years 80-99 as 19yy (receivers from before 2000 are not fleet devices)."""
    m = _DATE.fullmatch(s)
    if m is None:
        raise FieldError(f"nmea: date {s!r} is not ddmmyy")
    yy = int(m[3])
    try:
        d = date(2000 + yy if yy < 80 else 1900 + yy, int(m[2]), int(m[1]))
    except ValueError as exc:
        raise FieldError(f"nmea: date {s!r}: {exc}") from exc
    if d.year < 2000:
        raise FieldError(f"nmea: date {s!r} is before 2000")
    return (d.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY


def _coord(value: str, hemi: str, signs: str, limit: float) -> float:
    m = _DEG_MIN.fullmatch(value)
    if m is None or hemi not in signs or float(m[2]) >= 60.0:
        raise FieldError(f"nmea: coordinate {value!r},{hemi!r} is not d(dd)mm.mmm,{signs}")
    deg = int(m[1]) + float(m[2]) / 60.0
    if deg > limit:
        raise FieldError(f"nmea: coordinate {value!r} is beyond {limit} degrees")
    return -deg if hemi == signs[1] else deg
