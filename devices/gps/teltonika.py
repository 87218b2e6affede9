"""Teltonika Codec 8 (0x08) and Codec 8 Extended (0x8E) AVL packets, as sent over TCP.

Packet: ``00000000`` preamble, u32 data length, then the data field (codec id, u8 N1,
N1 records, u8 N2), then a u32 whose low 16 bits are CRC-16/ARC over the data field.
All integers are big-endian. See ``docs/protocols/gps.md``.

A record is ``u64 ms timestamp, u8 priority``, a 15-byte GPS element
(``i32 lon*1e7, i32 lat*1e7, i16 alt m, u16 angle deg, u8 satellites, u16 speed km/h``)
and an IO element, which is parsed only to find where the next record starts.
A record with 0 satellites (or at 0/0) carries no valid position and is skipped.
"""

from __future__ import annotations

import struct

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.records import GpsFix

CODEC_8 = 0x08
CODEC_8E = 0x8E

_KMH_TO_MPS = 1000.0 / 3600.0
# Times before 2000 or after 2100 are a device clock fault, not a position.
_TS_MIN_MS = 946_684_800_000
_TS_MAX_MS = 4_102_444_800_000

_RECORD_HEAD = struct.Struct(">QBiihHBH")  # ts_ms, priority, lon, lat, alt, angle, sats, speed


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (IBM): reflected polynomial 0xA001, init 0; check value 0xBB3D."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def decode_imei(payload: bytes) -> str:
    """The login packet a device sends first: u16 length, then that many ASCII digits."""
    if len(payload) < 2:
        raise FrameError(f"teltonika: IMEI packet too short ({len(payload)} bytes)")
    (length,) = struct.unpack_from(">H", payload)
    digits = payload[2:]
    if length == 0 or len(digits) != length:
        raise FrameError(f"teltonika: IMEI length field {length}, got {len(digits)} bytes")
    if not (digits.isascii() and digits.isdigit()):
        raise FieldError(f"teltonika: IMEI is not ASCII digits: {digits!r}")
    return digits.decode("ascii")


def decode(payload: bytes) -> list[GpsFix]:
    """Decode one AVL packet into its valid positions, in the order the device sent them."""
    try:
        return _decode(payload)
    except DecodeError:
        raise
    except (ValueError, struct.error, IndexError, OverflowError) as exc:
        raise FrameError(f"teltonika: malformed packet: {exc}") from exc


def _decode(payload: bytes) -> list[GpsFix]:
    if len(payload) < 12:
        raise FrameError(f"teltonika: packet too short ({len(payload)} bytes)")
    preamble, length = struct.unpack_from(">II", payload)
    if preamble != 0:
        raise FrameError(f"teltonika: preamble is 0x{preamble:08X}, expected 0")
    if len(payload) != 8 + length + 4:
        raise FrameError(
            f"teltonika: data length field says {length} bytes, packet holds {len(payload) - 12}"
        )
    data = payload[8 : 8 + length]
    (crc_sent,) = struct.unpack_from(">I", payload, 8 + length)
    crc = crc16_arc(data)
    if crc_sent != crc:
        raise ChecksumError(f"teltonika: CRC mismatch: got 0x{crc_sent:04X}, computed 0x{crc:04X}")
    if length < 3:
        raise FrameError(f"teltonika: data field too short ({length} bytes)")
    codec, n1, n2 = data[0], data[1], data[-1]
    if codec not in (CODEC_8, CODEC_8E):
        raise FrameError(f"teltonika: unsupported codec 0x{codec:02X}")
    if n1 != n2:
        raise FrameError(f"teltonika: record counts differ: N1={n1}, N2={n2}")
    records = data[:-1]  # without N2, so no record can read into it
    fixes: list[GpsFix] = []
    pos = 2
    for _ in range(n1):
        fix, pos = _record(records, pos, codec == CODEC_8E)
        if fix is not None:
            fixes.append(fix)
    if pos != len(records):
        raise FrameError(f"teltonika: {len(records) - pos} bytes left after {n1} records")
    return fixes


def _record(data: bytes, pos: int, extended: bool) -> tuple[GpsFix | None, int]:
    ts_ms, _prio, lon, lat, alt, angle, sats, speed = _RECORD_HEAD.unpack_from(data, pos)
    pos = _skip_io(data, pos + _RECORD_HEAD.size, extended)
    if sats == 0 or (lon == 0 and lat == 0):
        return None, pos
    if not _TS_MIN_MS <= ts_ms < _TS_MAX_MS:
        raise FieldError(f"teltonika: record time {ts_ms} ms is outside 2000..2100")
    lon_deg, lat_deg = lon / 1e7, lat / 1e7
    if not (-180.0 <= lon_deg <= 180.0 and -90.0 <= lat_deg <= 90.0):
        raise FieldError(f"teltonika: position out of range: lat {lat_deg}, lon {lon_deg}")
    if angle > 360:
        raise FieldError(f"teltonika: angle {angle} out of range")
    fix = GpsFix(
        ts_us=ts_ms * 1000,
        lon_deg=lon_deg,
        lat_deg=lat_deg,
        speed_mps=speed * _KMH_TO_MPS,
        heading_deg=float(angle),
        alt_m=float(alt),
        sats=sats,
    )
    return fix, pos


def _skip_io(data: bytes, pos: int, extended: bool) -> int:
    """Walk the IO element (values are not used) and return the offset after it."""
    # Codec 8: u8 event id, u8 total, then groups of u8 count x (u8 id, value).
    # Codec 8E: u16 everywhere, plus a final NX group of (u16 id, u16 len, value).
    fmt, size = (">H", 2) if extended else (">B", 1)  # ids and counts share one width
    pos += 2 * size  # event IO id, total IO count
    for width in (1, 2, 4, 8):
        (n,) = struct.unpack_from(fmt, data, pos)
        pos += size + n * (size + width)
    if extended:
        (nx,) = struct.unpack_from(">H", data, pos)
        pos += 2
        for _ in range(nx):
            _id, value_len = struct.unpack_from(">HH", data, pos)
            pos += 4 + value_len
    if pos > len(data):
        raise FrameError("teltonika: IO element runs past the end of the packet")
    return pos
