"""The fuzz targets: one harness per decoder family, and the table ``TARGETS``.

A harness takes the fuzzer's bytes, calls the decoder and returns normally when the
decoder kept its contract: records, or the error it documents (``DecodeError``; the
manifest's ``ManifestError``; nothing at all for ``decode_epc``). Anything else
escapes the harness, and atheris reports it as a finding: another exception from the
decoder, or :class:`ContractError` when the records themselves break what the decoder
promises (wrong type, the shared invariants of ``tests/devices``, a framer that loses
bytes).

Targets with several modes read the mode from the first byte (``data[0] % len(modes)``)
and give the rest to the decoder. The modes reach past what random bytes rarely pass:
``repaired`` rewrites the length and checksum fields so that the bytes after them are
fuzzed, ``stream`` runs the protocol's framer, as the serial reader thread does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from devices import epc, fleet
from devices.errors import DecodeError
from devices.gps import json as gps_json
from devices.gps import nmea, osmand, owntracks, teltonika
from devices.records import GpsFix, ReaderStatus, TagRead, fixes_to_array
from devices.rfid import ascii, chafon, mercury
from devices.rfid.framing import GARBAGE_CHUNK_BYTES, GARBAGE_CHUNKS, Framer
from ingest.manifest import ManifestError, parse_manifest, statements
from tests.devices.invariants import check_fix
from tests.devices.rfid import check_record

# The receive time the OsmAnd handler passes for a request without a timestamp.
RECEIVED_US = 1_795_504_502_000_000  # 2026-11-24T07:15:02Z
# Decoders accept device times up to 2100; the shared invariant's "now" is set there.
UNTIL_2100_US = 4_102_444_800 * 1_000_000


class ContractError(Exception):
    """A decoder returned, but what it returned breaks its documented contract."""


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    decoders: str  # what the harness calls, for --list
    harness: Callable[[bytes], None]
    modes: tuple[str, ...] = ()  # () = no mode byte
    max_len: int = 4096
    tokens: tuple[bytes, ...] = ()  # the libFuzzer dictionary

    def mode(self, data: bytes) -> tuple[str, bytes]:
        """The mode the first byte selects, and the decoder's input."""
        if not self.modes:
            return "", data
        if not data:
            return self.modes[0], b""
        return self.modes[data[0] % len(self.modes)], data[1:]


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ContractError(what)


def _fixes(fixes: object, *, invariants: bool = True) -> None:
    """A list of GpsFix that ingest can pack; ``invariants``: the shared check_fix too."""
    _require(
        isinstance(fixes, list) and all(isinstance(f, GpsFix) for f in fixes),
        f"expected list[GpsFix], got {fixes!r}",
    )
    assert isinstance(fixes, list)
    for fix in fixes:
        if invariants:
            check_fix(fix, now_us=UNTIL_2100_US)
    fixes_to_array(fixes)  # what ingest does next: int16 sats, int64 times


def _records(records: object) -> None:
    _require(
        isinstance(records, list) and all(isinstance(r, TagRead | ReaderStatus) for r in records),
        f"expected list[TagRead | ReaderStatus], got {records!r}",
    )
    assert isinstance(records, list)
    for rec in records:
        check_record(rec)


# ------------------------------------------------------------------ GPS


def gps_json_harness(data: bytes) -> None:
    # milepost's own JSON checks no ranges (the validate stage does): types and packing only
    try:
        fixes = gps_json.decode(data)
    except DecodeError:
        return
    _fixes(fixes, invariants=False)


_SENTENCE = re.compile(rb"([$!])([^$!*\r\n]*)\*[0-9A-Fa-f]{2}")


def _nmea_checksums(data: bytes) -> bytes:
    def fix(m: re.Match[bytes]) -> bytes:
        cs = 0
        for b in m[2]:
            cs ^= b
        return m[1] + m[2] + b"*%02X" % cs

    return _SENTENCE.sub(fix, data)


def nmea_harness(data: bytes) -> None:
    mode, payload = NMEA.mode(data)
    if mode == "repaired":
        payload = _nmea_checksums(payload)
    try:
        fixes = nmea.decode(payload)
    except DecodeError:
        return
    _fixes(fixes)


def owntracks_harness(data: bytes) -> None:
    try:
        fixes = owntracks.decode(data)
    except DecodeError:
        return
    _fixes(fixes)


_LOCAL = ZoneInfo("Europe/Berlin")


def osmand_harness(data: bytes) -> None:
    mode, payload = OSMAND.mode(data)
    try:
        if mode == "json":
            message = osmand.decode_json(payload)
        else:  # as api/routes/osmand.py parses a form body
            params = parse_qsl(payload.decode("utf-8", "replace"), keep_blank_values=True)
            if mode == "query":
                message = osmand.decode_query(params, now_us=RECEIVED_US)
            else:  # local times, no receive time
                message = osmand.decode_query(params, tz=_LOCAL)
    except DecodeError:
        return
    _require(
        isinstance(message, osmand.OsmandMessage)
        and isinstance(message.device_id, str)
        and bool(message.device_id),
        f"bad OsmandMessage {message!r}",
    )
    _require(
        math.isnan(message.battery_pct) or 0.0 <= message.battery_pct <= 100.0,
        f"battery_pct {message.battery_pct!r}",
    )
    _fixes(message.fixes)


def _teltonika_repaired(data: bytes) -> bytes:
    """Preamble 0, the data length and the CRC made right around ``data``."""
    crc = teltonika.crc16_arc(data)
    return bytes(4) + len(data).to_bytes(4) + data + crc.to_bytes(4)


def teltonika_harness(data: bytes) -> None:
    mode, payload = TELTONIKA.mode(data)
    try:
        if mode == "imei":
            imei = teltonika.decode_imei(payload)
            _require(isinstance(imei, str) and imei.isdigit(), f"IMEI {imei!r}")
            return
        if mode == "repaired":
            payload = _teltonika_repaired(payload[8:-4] if len(payload) >= 12 else payload)
        fixes = teltonika.decode(payload)
    except DecodeError:
        return
    _fixes(fixes)


# ------------------------------------------------------------------ RFID readers


def _stream(
    make: Callable[[], Framer],
    decoders: Sequence[Callable[[bytes], object]],
    data: bytes,
    max_pending: int,
    *,
    sized: bool,
) -> None:
    """Frame ``data`` in one piece and in two, then decode every frame.

    A framer never raises, keeps at most ``max_pending`` bytes, finds the same frames
    however the stream is split and, for the sized protocols, accounts for every byte
    (in a frame, discarded, or pending).
    """
    whole, halves = make(), make()
    frames = whole.feed(data)
    _require(whole.pending <= max_pending, f"{whole.pending} bytes pending")
    if sized:
        _require(
            sum(map(len, frames)) + whole.discarded + whole.pending == len(data),
            "framer lost or invented bytes",
        )
    frames += whole.flush()
    _require(whole.pending == 0, "flush left bytes in the buffer")
    cut = len(data) // 2
    split = halves.feed(data[:cut]) + halves.feed(data[cut:]) + halves.flush()
    _require(split == frames, "frames depend on how the stream was split")
    runs = whole.drain_garbage()
    _require(len(runs) <= GARBAGE_CHUNKS and all(len(r) <= GARBAGE_CHUNK_BYTES for r in runs),
             "garbage log over its bound")  # fmt: skip
    for frame in frames:
        for decode in decoders:
            try:
                records = decode(frame)
            except DecodeError:
                continue
            _records(records)


def _mercury_repaired(data: bytes, overhead: int) -> bytes:
    """SOH, LEN and CRC made right (LEN from the size, data cut to what LEN can say)."""
    if len(data) < overhead:
        return data
    frame = bytearray(data[: mercury.MAX_LEN + overhead])
    frame[0], frame[1] = mercury.SOH, len(frame) - overhead
    frame[-2:] = mercury.crc16(frame[1:-2]).to_bytes(2)
    return bytes(frame)


def mercury_harness(data: bytes) -> None:
    mode, payload = MERCURY.mode(data)
    if mode == "stream":
        _stream(mercury.Framer, [mercury.decode], payload, mercury.MAX_LEN + 7, sized=True)
        return
    try:
        if mode == "command":
            opcode, body = mercury.decode_command(_mercury_repaired(payload, 5))
            _require(0 <= opcode <= 0xFF and isinstance(body, bytes), f"command {opcode!r}")
            return
        records = mercury.decode(_mercury_repaired(payload, 7) if mode == "repaired" else payload)
    except DecodeError:
        return
    _records(records)


def _chafon_repaired(data: bytes) -> bytes:
    """Len and CRC made right (Len from the size, data cut to what Len can say)."""
    if len(data) < 5:
        return data
    frame = bytearray(data[:256])
    frame[0] = len(frame) - 1
    frame[-2:] = chafon.crc16(frame[:-2]).to_bytes(2, "little")
    return bytes(frame)


def chafon_harness(data: bytes) -> None:
    mode, payload = CHAFON.mode(data)
    if mode == "stream":
        _stream(chafon.Framer, [chafon.decode18, chafon.decode288], payload, 256, sized=True)
        return
    frame = payload if mode.endswith("raw") else _chafon_repaired(payload)
    try:
        if mode == "command":
            adr, cmd, body = chafon.decode_command(frame)
            _require(
                0 <= adr <= 0xFF and 0 <= cmd <= 0xFF and isinstance(body, bytes),
                f"command {adr!r} {cmd!r}",
            )
            return
        decode = chafon.decode18 if mode.startswith("18") else chafon.decode288
        records = decode(frame)
    except DecodeError:
        return
    _records(records)


def ascii_harness(data: bytes) -> None:
    mode, payload = ASCII.mode(data)
    if mode == "stream":
        _stream(ascii.Framer, [ascii.decode], payload, ascii.MAX_LINE, sized=False)
        return
    try:
        records = ascii.decode(payload)
    except DecodeError:
        return
    _records(records)


# ------------------------------------------------------------------ EPC, fleet, manifest


def epc_harness(data: bytes) -> None:
    # decode_epc never raises; a decoded EPC encodes back to itself
    info = epc.decode_epc(data.decode("utf-8", "surrogateescape"))
    _require(isinstance(info, epc.EpcInfo), f"expected EpcInfo, got {info!r}")
    info.to_json_dict()
    if not info.decoded:
        _require(info.scheme in (None, "unknown") and bool(info.reason), f"undecoded {info!r}")
        return
    assert info.company_prefix is not None and info.reference is not None
    assert info.filter is not None
    if info.scheme == "sgtin-96":
        assert info.serial is not None
        again = epc.encode_sgtin96(info.company_prefix, info.reference, info.serial, info.filter)
    else:
        again = epc.encode_sscc96(info.company_prefix, info.reference, info.filter)
    _require(again == info.epc_hex, f"{info.epc_hex} decodes to {info} but encodes to {again}")


_TS_MAX_US = 4_102_444_800 * 1_000_000  # the fleet messages' times: 1970 to 2100
_UPPER_HEX_EPC = re.compile(r"(?:[0-9A-F]{2}){2,62}")
_TRACKING_NUMBER = re.compile(r"[A-Za-z0-9-]{6,40}")  # DESIGN.md, Identifiers


def fleet_harness(data: bytes) -> None:
    mode, payload = FLEET.mode(data)
    try:
        if mode == "cargo":
            scan = fleet.decode_cargo(payload)
            _require(0 <= scan.ts_us < _TS_MAX_US, f"time {scan.ts_us}")
            _require(list(scan.epcs) == sorted(set(scan.epcs)), f"epcs not sorted/unique {scan}")
            for e in scan.epcs:
                _require(bool(_UPPER_HEX_EPC.fullmatch(e)), f"EPC {e!r} is not upper-case hex")
        elif mode == "sensor":
            r = fleet.decode_sensor(payload)
            _require(0 <= r.ts_us < _TS_MAX_US, f"time {r.ts_us}")
            _require(not (math.isinf(r.temp_c) or math.isinf(r.humidity)), f"infinite {r}")
            _require(not (math.isnan(r.temp_c) and math.isnan(r.humidity)), f"empty {r}")
        else:
            pod = fleet.decode_pod(payload)
            _require(0 <= pod.ts_us < _TS_MAX_US, f"time {pod.ts_us}")
            _require(
                bool(_TRACKING_NUMBER.fullmatch(pod.tracking_number)),
                f"tracking number {pod.tracking_number!r}",
            )
            _require(pod.outcome in ("delivered", "failed"), f"outcome {pod.outcome!r}")
    except DecodeError:
        return


def manifest_harness(data: bytes) -> None:
    try:
        m = parse_manifest(data)
    except ManifestError:
        return
    statements(m)  # a valid manifest always turns into its upserts


# ------------------------------------------------------------------ the table
# libFuzzer dictionaries: the words of each format, which mutations then splice in

_JSON = (b"{", b"}", b"[", b"]", b":", b",", b'"', b"null", b"true", b"false", b"-0", b"1e309",
         b"0.5", b"-1", b"1795504502", b'"2026-11-24T08:15:02.250+01:00"')  # fmt: skip


def _keys(*names: str) -> tuple[bytes, ...]:
    return tuple(f'"{n}":'.encode() for n in names)


_GPS_JSON_WORDS = (*_JSON, *_keys("ts", "lat", "lon", "speed", "heading", "acc", "alt", "sats",
                                  "seq"))  # fmt: skip
_NMEA_WORDS = (b"$GPRMC,", b"$GNGGA,", b"$GPGGA,", b"$INRMC,", b"$PGRMZ,", b"!", b"*", b",A,",
               b",V,", b",N,", b",S,", b",E,", b",W,", b"\r\n", b".", b"-", b"235960.00",
               b"290280", b"9000.0000", b"18000.0000")  # fmt: skip
_OWNTRACKS_WORDS = (*_JSON, *_keys("_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt",
                                   "tid"), b'"location"', b'"encrypted"', b'"lwt"')  # fmt: skip
_OSMAND_WORDS = (*_JSON, b"id=", b"deviceid=", b"&lat=", b"&lon=", b"&location=", b"&timestamp=",
                 b"&speed=", b"&bearing=", b"&heading=", b"&altitude=", b"&accuracy=", b"&hdop=",
                 b"&batt=", b"&charge=true", b"&valid=", b"%3A", b"+", b"T",
                 b"2026-03-29 02:30:00", b"2147483648",
                 *_keys("device_id", "location", "timestamp", "coords", "latitude", "longitude",
                        "speed", "heading", "accuracy", "altitude", "battery", "level",
                        "is_charging"))  # fmt: skip
_TELTONIKA_WORDS = (b"\x00\x00\x00\x00", b"\x08", b"\x8e", b"\x00\x0f", b"\xff\xff",
                    b"\x00\x00\x01\x6b\x40\xd8\xea\x30")  # fmt: skip
_MERCURY_WORDS = (b"\xff", b"\x22", b"\x29", b"\x2f", b"\x04\x00", b"\x10\x00\x1b", b"\x01\xff",
                  b"\x1f\xff", b"\x00\x80\x30\x00")  # fmt: skip
_CHAFON_WORDS = (b"\x00\x01\x03", b"\x00\x01\x01", b"\x00\xee\x00", b"\x00\xee\x28",
                 b"\x00\x01\x26", b"\x0c")  # fmt: skip
_ASCII_WORDS = (b"\r", b"\n", b"\r\n", b",", b",,", b"-61.5", b"255", b"1e2",
                b"3074257BF7194E4000001A85")  # fmt: skip
_EPC_WORDS = (b"30", b"31", b"36", b"F9", b"000000", b" ")
_FLEET_WORDS = (*_JSON, *_keys("ts", "epcs", "temp_c", "humidity", "tracking_number", "outcome",
                               "reason", "photo_url", "signed_by"),
                b'"delivered"', b'"failed"', b"\\n", b"\\u0000")  # fmt: skip
_MANIFEST_WORDS = (*_JSON, *_keys("stops", "vehicles", "gates", "parcels", "routes", "stop_id",
                                  "kind", "geofence", "type", "coordinates", "radius_m",
                                  "hub_stop_id", "vehicle_id", "epc", "gate_id", "dock_stop_id",
                                  "url", "protocol", "baud", "antennas", "tracking_number",
                                  "promised_by", "temp_min_c", "temp_max_c", "stop_ids"),
                   b'"Point"', b'"Polygon"', b'"delivery"', b'"hub"', b'"dock"', b'"mercury"',
                   b'"hall"')  # fmt: skip

GPS_JSON = Target(
    "gps-json",
    "devices.gps.json.decode (and decode_array)",
    gps_json_harness,
    tokens=_GPS_JSON_WORDS,
)
NMEA = Target(
    "nmea", "devices.gps.nmea.decode", nmea_harness, ("raw", "repaired"), tokens=_NMEA_WORDS
)
OWNTRACKS = Target(
    "owntracks", "devices.gps.owntracks.decode", owntracks_harness, tokens=_OWNTRACKS_WORDS
)
OSMAND = Target(
    "osmand",
    "devices.gps.osmand.decode_query (UTC / local time) and decode_json",
    osmand_harness,
    ("query", "query-local", "json"),
    tokens=_OSMAND_WORDS,
)
TELTONIKA = Target(
    "teltonika",
    "devices.gps.teltonika.decode and decode_imei",
    teltonika_harness,
    ("raw", "repaired", "imei"),
    max_len=1024,
    tokens=_TELTONIKA_WORDS,
)
MERCURY = Target(
    "mercury",
    "devices.rfid.mercury: Framer, decode, decode_command",
    mercury_harness,
    ("raw", "repaired", "stream", "command"),
    max_len=768,
    tokens=_MERCURY_WORDS,
)
CHAFON = Target(
    "chafon",
    "devices.rfid.chafon: Framer, decode18, decode288, decode_command",
    chafon_harness,
    ("18-raw", "288-raw", "18", "288", "stream", "command"),
    max_len=768,
    tokens=_CHAFON_WORDS,
)
ASCII = Target(
    "ascii",
    "devices.rfid.ascii: Framer, decode",
    ascii_harness,
    ("line", "stream"),
    max_len=1024,
    tokens=_ASCII_WORDS,
)
EPC = Target(
    "epc", "devices.epc.decode_epc (never raises)", epc_harness, max_len=256, tokens=_EPC_WORDS
)
FLEET = Target(
    "fleet",
    "devices.fleet.decode_cargo, decode_sensor, decode_pod",
    fleet_harness,
    ("cargo", "sensor", "pod"),
    tokens=_FLEET_WORDS,
)
MANIFEST = Target(
    "manifest",
    "ingest.manifest.parse_manifest (ManifestError) and statements",
    manifest_harness,
    max_len=8192,
    tokens=_MANIFEST_WORDS,
)

TARGETS: dict[str, Target] = {t.name: t for t in (
    GPS_JSON, NMEA, OWNTRACKS, OSMAND, TELTONIKA, MERCURY, CHAFON, ASCII, EPC, FLEET, MANIFEST,
)}  # fmt: skip
