"""Chafon UHFReader18 and UHFReader288 (CF-RU5102, UR-series, ZK-RFID10x) serial protocol.

READERS.md section 1b. Frames::

    command : Len Adr Cmd   Data... CRC_LSB CRC_MSB
    response: Len Adr reCmd Status Data... CRC_LSB CRC_MSB      size Len + 1

The CRC is CRC-16/MCRF4XX over Len..Data, sent LSB first; run over a whole frame it
gives 0. The two families differ only in the inventory and autonomous-output layouts,
hence two decoders, :func:`decode18` and :func:`decode288`, and one :class:`Framer`.
RSSI is the reader's unsigned vendor byte, stored raw (``rssi_dbm`` False).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from devices.errors import ChecksumError, FieldError, FrameError
from devices.records import ReaderStatus, TagRead
from devices.rfid.framing import SizedFrameScanner

Record = TagRead | ReaderStatus

MIN_LEN = 4  # a command without data; responses have at least 5

CMD_INVENTORY = 0x01
CMD_READER_INFO = 0x21
RECMD_AUTONOMOUS = 0xEE

STATUS_OK = 0x00
STATUS_DONE = 0x01
STATUS_TIMEOUT = 0x02
STATUS_MORE = 0x03
STATUS_BUFFER_FULL = 0x04
STATUS_STATISTICS = 0x26
STATUS_HEARTBEAT = 0x28
STATUS_ANTENNA_ERROR = 0xF8

_INVENTORY_STATUSES = {
    STATUS_DONE: ("cycle_end", "inventory finished"),
    STATUS_TIMEOUT: ("cycle_end", "scan time overflowed; the list may be partial"),
    STATUS_MORE: ("more", "more frames follow"),
    STATUS_BUFFER_FULL: ("cycle_end", "reader buffer full; the list may be partial"),
}


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MCRF4XX: reflected poly 0x8408, init 0xFFFF, no final XOR (check 0x6F91)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class Framer(SizedFrameScanner):
    """Chafon frames out of a byte stream (see :mod:`devices.rfid.framing` for the API).

    A frame starts with a Len byte (>= 4) and is Len + 1 bytes long; the CRC over the
    whole frame must be 0, otherwise one byte is dropped and the scan goes on. Works for
    both directions (responses and commands).
    """

    def frame_size(self, buf: bytearray, pos: int) -> int:
        size = buf[pos] + 1
        if size <= MIN_LEN:
            return -1
        if len(buf) - pos < size:
            return 0
        return size if crc16(buf[pos : pos + size]) == 0 else -1


def _unwrap(frame: bytes, min_len: int) -> bytes:
    """Check a whole frame; return Adr..Data."""
    if len(frame) < min_len + 1 or frame[0] + 1 != len(frame):
        raise FrameError(f"Len byte does not match a frame of {len(frame)} bytes")
    if crc16(frame) != 0:
        raise ChecksumError(f"CRC mismatch (residue 0x{crc16(frame):04X})")
    return frame[1:-2]


# ------------------------------------------------------------------ decoding


def _antenna(mask: int) -> int:
    """Antenna bitmask (0x01 ant 1, 0x02 ant 2, 0x04 ant 3, ...) -> antenna number."""
    if mask == 0 or mask & (mask - 1):
        raise FieldError(f"antenna mask 0x{mask:02X} does not name one antenna")
    return mask.bit_length()


def _nonempty(epc: bytes) -> str:
    if not epc:
        raise FieldError("empty EPC")
    return epc.hex().upper()


def _inventory18(data: bytes) -> list[Record]:
    """Num, then Num x [EPCLen EPC]; no antenna, no RSSI."""
    if not data:
        raise FieldError("inventory reply without Num")
    reads: list[Record] = []
    pos = 1
    for _ in range(data[0]):
        n = data[pos] if pos < len(data) else 0
        if pos + 1 + n > len(data):
            raise FieldError(f"tag {len(reads) + 1} runs past the frame")
        reads.append(TagRead(_nonempty(data[pos + 1 : pos + 1 + n])))
        pos += 1 + n
    if pos != len(data):
        raise FieldError(f"{len(data) - pos} bytes after {data[0]} tags")
    return reads


def _inventory288(data: bytes) -> list[Record]:
    """Ant (bitmask), Num, then Num x [Len EPC RSSI]."""
    if len(data) < 2:
        raise FieldError("inventory reply without Ant and Num")
    reads: list[Record] = []
    pos = 2
    for _ in range(data[1]):
        n = data[pos] if pos < len(data) else 0
        if pos + 2 + n > len(data):
            raise FieldError(f"tag {len(reads) + 1} runs past the frame")
        epc = _nonempty(data[pos + 1 : pos + 1 + n])
        reads.append(TagRead(epc, _antenna(data[0]), float(data[pos + 1 + n])))
        pos += 2 + n
    if pos != len(data):
        raise FieldError(f"{len(data) - pos} bytes after {data[1]} tags")
    return reads


def _autonomous18(data: bytes) -> list[Record]:
    """Scan mode: Data is the EPC."""
    return [TagRead(_nonempty(data))]


def _autonomous288(data: bytes) -> list[Record]:
    """Real-time mode: Ant (bitmask), Len, EPC, RSSI."""
    if len(data) < 2 or len(data) != data[1] + 3:
        raise FieldError("real-time output is not Ant, Len, EPC, RSSI")
    return [TagRead(_nonempty(data[2:-1]), _antenna(data[0]), float(data[-1]))]


def _heartbeat(data: bytes) -> ReaderStatus:
    """PacketNo u32, AntStatus 8 bytes, TotalCount u32."""
    if len(data) != 16:
        raise FieldError(f"heartbeat of {len(data)} bytes, not 16")
    detail = f"packet {int.from_bytes(data[:4])}, antenna status {data[4:12].hex().upper()}"
    return ReaderStatus("keepalive", STATUS_HEARTBEAT, detail, int.from_bytes(data[12:]))


def _statistics(data: bytes) -> ReaderStatus:
    """Ant, ReadRate u16, TotalCount u32 (sent when QValue bit 7 asked for it)."""
    if len(data) != 7:
        raise FieldError(f"statistics of {len(data)} bytes, not 7")
    detail = f"antenna mask 0x{data[0]:02X}, read rate {int.from_bytes(data[1:3])}"
    return ReaderStatus("response", STATUS_STATISTICS, detail, int.from_bytes(data[3:]))


def _decode(
    frame: bytes,
    inventory: Callable[[bytes], list[Record]],
    autonomous: Callable[[bytes], list[Record]],
) -> list[Record]:
    body = _unwrap(frame, 5)
    recmd, status, data = body[1], body[2], body[3:]
    if status == STATUS_HEARTBEAT and recmd == RECMD_AUTONOMOUS:
        return [_heartbeat(data)]
    if recmd == RECMD_AUTONOMOUS and status == STATUS_OK:
        return autonomous(data)
    if recmd == CMD_INVENTORY and status in _INVENTORY_STATUSES:
        kind, detail = _INVENTORY_STATUSES[status]
        return [*inventory(data), ReaderStatus(kind, status, detail)]
    if recmd == CMD_INVENTORY and status == STATUS_STATISTICS:
        return [_statistics(data)]
    extra = f": {data.hex().upper()}" if data else ""
    if status == STATUS_ANTENNA_ERROR:
        return [ReaderStatus("health", status, f"antenna error{extra}")]
    if recmd in (CMD_INVENTORY, RECMD_AUTONOMOUS):
        return [ReaderStatus("health", status, f"reCmd 0x{recmd:02X} status 0x{status:02X}{extra}")]
    return [ReaderStatus("response", recmd, f"status 0x{status:02X}{extra}")]


def decode18(frame: bytes) -> list[Record]:
    """One whole UHFReader18 response -> records. Raises :class:`DecodeError` if malformed."""
    return _decode(frame, _inventory18, _autonomous18)


def decode288(frame: bytes) -> list[Record]:
    """One whole UHFReader288 / UR-series response -> records."""
    return _decode(frame, _inventory288, _autonomous288)


def decode_command(frame: bytes) -> tuple[int, int, bytes]:
    """One whole host -> reader command -> (adr, cmd, data); for simulators."""
    body = _unwrap(frame, 4)
    return body[0], body[1], body[2:]


# ------------------------------------------------------------------ encoding


def _u8(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be an integer in 0..255, got {value!r}")
    return value


def encode_frame(payload: bytes) -> bytes:
    """Len + payload (Adr..Data) + CRC, LSB first."""
    if len(payload) > 0xFD:
        raise ValueError(f"{len(payload)} bytes do not fit one frame")
    body = bytes([len(payload) + 2]) + payload
    return body + crc16(body).to_bytes(2, "little")


def encode_command(cmd: int, data: bytes = b"", adr: int = 0xFF) -> bytes:
    return encode_frame(bytes([_u8(adr, "adr"), _u8(cmd, "cmd")]) + data)


def encode_response(recmd: int, status: int, data: bytes = b"", adr: int = 0x00) -> bytes:
    return encode_frame(bytes([_u8(adr, "adr"), _u8(recmd, "reCmd"), _u8(status, "status")]) + data)


def _tag(read: TagRead, *, with_rssi: bool) -> bytes:
    """[Len EPC] or [Len EPC RSSI] of a read, refusing fields the protocol cannot carry."""
    rest = (read.read_count, read.offset_ms, read.frequency_khz, read.phase_deg)
    if rest != (1, -1, -1, -1):
        raise ValueError("Chafon carries no read count, timestamp, frequency or phase")
    if with_rssi and (read.rssi_dbm or not float(read.rssi).is_integer()):
        raise ValueError(f"RSSI must be the raw vendor byte, got {read.rssi!r}")
    if not with_rssi and not math.isnan(read.rssi):
        raise ValueError("UHFReader18 carries no RSSI")
    epc = bytes.fromhex(read.epc_hex)
    if not epc:
        raise ValueError("empty EPC")
    return bytes([_u8(len(epc), "EPC length")]) + epc + (
        bytes([_u8(int(read.rssi), "rssi")]) if with_rssi else b"")


def _mask(antenna: int) -> int:
    if not 1 <= antenna <= 8:
        raise ValueError(f"antenna must be 1..8, got {antenna!r}")
    return 1 << (antenna - 1)


def encode_inventory_response18(
    epcs: Sequence[str], status: int = STATUS_DONE, adr: int = 0x00,
) -> bytes:
    """A UHFReader18 inventory reply: Num, then [EPCLen EPC] per tag."""
    tags = b"".join(_tag(TagRead(e), with_rssi=False) for e in epcs)
    return encode_response(CMD_INVENTORY, status, bytes([_u8(len(epcs), "Num")]) + tags, adr)


def encode_inventory_response288(
    reads: Sequence[TagRead], status: int = STATUS_DONE, adr: int = 0x00, antenna: int = 1,
) -> bytes:
    """A UHFReader288 inventory reply from one antenna: Ant, Num, [Len EPC RSSI] per tag.
    Each read's antenna must be ``antenna`` (or -1) and its RSSI the raw vendor byte."""
    for r in reads:
        if r.antenna not in (-1, antenna):
            raise ValueError(f"read from antenna {r.antenna} in a frame for antenna {antenna}")
    tags = b"".join(_tag(r, with_rssi=True) for r in reads)
    head = bytes([_mask(antenna), _u8(len(reads), "Num")])
    return encode_response(CMD_INVENTORY, status, head + tags, adr)


def encode_autonomous18(epc_hex: str, adr: int = 0x00) -> bytes:
    """UHFReader18 scan-mode output: reCmd 0xEE, Data = EPC."""
    tag = _tag(TagRead(epc_hex), with_rssi=False)
    return encode_response(RECMD_AUTONOMOUS, STATUS_OK, tag[1:], adr)  # no Len byte


def encode_autonomous288(read: TagRead, adr: int = 0x00) -> bytes:
    """UHFReader288 real-time output: reCmd 0xEE, Data = Ant, Len, EPC, RSSI."""
    data = bytes([_mask(read.antenna)]) + _tag(read, with_rssi=True)
    return encode_response(RECMD_AUTONOMOUS, STATUS_OK, data, adr)


def encode_heartbeat(
    packet_no: int, total_count: int, antenna_status: bytes = bytes(8), adr: int = 0x00,
) -> bytes:
    """reCmd 0xEE, Status 0x28: PacketNo u32, AntStatus 8 bytes, TotalCount u32."""
    if len(antenna_status) != 8:
        raise ValueError("antenna_status must be 8 bytes")
    data = packet_no.to_bytes(4) + antenna_status + total_count.to_bytes(4)
    return encode_response(RECMD_AUTONOMOUS, STATUS_HEARTBEAT, data, adr)


def encode_statistics(antenna: int, read_rate: int, total_count: int, adr: int = 0x00) -> bytes:
    """reCmd 0x01, Status 0x26: Ant, ReadRate u16, TotalCount u32."""
    data = bytes([_mask(antenna)]) + read_rate.to_bytes(2) + total_count.to_bytes(4)
    return encode_response(CMD_INVENTORY, STATUS_STATISTICS, data, adr)


# ------------------------------------------------------------------ commands


def cmd_inventory18(adr: int = 0xFF) -> bytes:
    """UHFReader18 G2 inventory: ``04 FF 01 1B B4`` broadcast."""
    return encode_command(CMD_INVENTORY, b"", adr)


def cmd_inventory288(
    adr: int = 0xFF, *, q: int = 15, session: int = 0, statistics: bool = False,
    strategy: int = 0, fast_id: bool = False, mask_mem: int = 1, mask_addr: int = 0,
    mask_bits: int = 0, mask_data: bytes = b"", tid: tuple[int, int] | None = None,
    target: int = 0, antenna: int = 1, scan_time_100ms: int = 0x14,
) -> bytes:
    """UHFReader288 G2 inventory. The defaults are wabson's (``0D FF 01 0F 00 01 00 00 00
    00 80 14 C0 3A``): Q 15, session 0, no mask, target A, antenna 1, 2 s scan time.
    ``tid`` = (AdrTID, LenTID) asks for TID instead of EPC."""
    if not 0 <= q <= 15 or strategy not in (0, 1):
        raise ValueError("q must be 0..15 and strategy 0 or 1")
    if len(mask_data) != (mask_bits + 7) // 8:
        raise ValueError(f"{mask_bits} mask bits need {(mask_bits + 7) // 8} bytes of mask_data")
    qvalue = statistics << 7 | strategy << 6 | fast_id << 5 | q
    data = bytes([qvalue, _u8(session, "session"), _u8(mask_mem, "mask_mem")])
    data += mask_addr.to_bytes(2) + bytes([_u8(mask_bits, "mask_bits")]) + mask_data
    if tid is not None:
        data += bytes([_u8(tid[0], "AdrTID"), _u8(tid[1], "LenTID")])
    if not 1 <= antenna <= 0x80:
        raise ValueError(f"antenna must be 1..128, got {antenna!r}")
    data += bytes([_u8(target, "target"), 0x80 + antenna - 1, _u8(scan_time_100ms, "scan_time")])
    return encode_command(CMD_INVENTORY, data, adr)
