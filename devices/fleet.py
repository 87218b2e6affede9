"""The van's own JSON messages besides GPS: cargo inventories, sensor readings, proofs
of delivery (topics ``fleet/{vehicle_id}/cargo``, ``/sensor``, ``/pod``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from devices.errors import DecodeError, FieldError
from devices.gps.json import parse_ts_us
from devices.records import US_PER_S

_EPC = re.compile(r"^(?:[0-9A-Fa-f]{2}){2,62}$")
_TRACKING = re.compile(r"^[A-Za-z0-9-]{6,40}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a NUL cannot even be stored
MAX_EPCS = 10_000


@dataclass(frozen=True, slots=True)
class CargoScan:
    """The set of tags the van's cargo reader sees at ``ts_us`` (upper-case hex, sorted)."""

    ts_us: int
    epcs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SensorReading:
    ts_us: int
    temp_c: float
    humidity: float


@dataclass(frozen=True, slots=True)
class ProofOfDelivery:
    ts_us: int
    tracking_number: str
    outcome: str  # "delivered" | "failed"
    reason: str | None = None
    photo_url: str | None = None
    signed_by: str | None = None


def _object(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FieldError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def decode_cargo(payload: bytes) -> CargoScan:
    doc = _object(payload)
    epcs = doc.get("epcs")
    if not isinstance(epcs, list) or len(epcs) > MAX_EPCS:
        raise FieldError(f"'epcs' must be a list of at most {MAX_EPCS} hex strings")
    for i, e in enumerate(epcs):
        if not isinstance(e, str) or not _EPC.fullmatch(e):
            raise FieldError(f"epcs[{i}] is not an EPC in hex: {e!r}")
    return CargoScan(parse_ts_us(doc.get("ts")), tuple(sorted({e.upper() for e in epcs})))


def _optional_number(doc: dict[str, Any], key: str) -> float:
    v = doc.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise FieldError(f"{key!r} must be a finite number, got {v!r}")
    return float(v)


def decode_sensor(payload: bytes) -> SensorReading:
    doc = _object(payload)
    reading = SensorReading(parse_ts_us(doc.get("ts")), _optional_number(doc, "temp_c"),
                            _optional_number(doc, "humidity"))  # fmt: skip
    if math.isnan(reading.temp_c) and math.isnan(reading.humidity):
        raise FieldError("a sensor reading needs 'temp_c' or 'humidity'")
    return reading


def decode_pod(payload: bytes) -> ProofOfDelivery:
    doc = _object(payload)
    number = doc.get("tracking_number")
    if not isinstance(number, str) or not _TRACKING.fullmatch(number):
        raise FieldError(f"'tracking_number' is missing or malformed: {number!r}")
    outcome = doc.get("outcome")
    if outcome not in ("delivered", "failed"):
        raise FieldError(f"'outcome' must be 'delivered' or 'failed', got {outcome!r}")
    extra = {}
    for key in ("reason", "photo_url", "signed_by"):
        v = doc.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > 2000
                              or _CONTROL.search(v)):  # fmt: skip
            raise FieldError(f"{key!r} must be a string of at most 2000 characters, without"
                             " control characters")
        extra[key] = v
    return ProofOfDelivery(parse_ts_us(doc.get("ts")), number, outcome, **extra)


# ---------------------------------------------------------------- encoders (simulators)
# The inverses of the decoders above: decode(encode(x)) == x (``ts`` in Unix seconds, as
# the GPS JSON encoder writes it).


def encode_cargo(scan: CargoScan) -> bytes:
    return orjson.dumps({"ts": scan.ts_us / US_PER_S, "epcs": list(scan.epcs)})


def encode_sensor(reading: SensorReading) -> bytes:
    doc: dict[str, Any] = {"ts": reading.ts_us / US_PER_S}
    for key, value in (("temp_c", reading.temp_c), ("humidity", reading.humidity)):
        if not math.isnan(value):
            doc[key] = value
    return orjson.dumps(doc)


def encode_pod(pod: ProofOfDelivery) -> bytes:
    doc: dict[str, Any] = {"ts": pod.ts_us / US_PER_S, "tracking_number": pod.tracking_number,
                           "outcome": pod.outcome}  # fmt: skip
    for key in ("reason", "photo_url", "signed_by"):
        if getattr(pod, key) is not None:
            doc[key] = getattr(pod, key)
    return orjson.dumps(doc)
