"""ThingMagic / Jadak Mercury embedded-module serial protocol (M6e, M6e-Nano, M7e).

READERS.md section 1a. Module -> host frame::

    FF LEN OPCODE STATUS(2) DATA(LEN) CRC(2, big-endian)      size LEN + 7

Host -> module commands have no STATUS (size LEN + 5). The CRC is ThingMagic's
nibble-table CRC over LEN..DATA (check value 0xA69D), not CRC-16/CCITT-FALSE.

:class:`Framer` cuts frames out of the stream; :func:`decode` turns one frame into
:class:`TagRead` and :class:`ReaderStatus` records; the ``encode_*`` functions are its
inverse (for simulators) and the ``cmd_*`` functions build the commands the ingest sends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from devices.errors import ChecksumError, FieldError, FrameError
from devices.records import ReaderStatus, TagRead
from devices.rfid.framing import SizedFrameScanner

Record = TagRead | ReaderStatus

SOH = 0xFF
MAX_LEN = 0xF8

OP_BOOT = 0x04
OP_READ_TAG_MULTIPLE = 0x22
OP_GET_TAG_BUFFER = 0x29
OP_CLEAR_TAG_BUFFER = 0x2A
OP_MULTI_PROTOCOL = 0x2F
# every opcode READERS.md lists; the resync rule accepts a frame only with one of these
KNOWN_OPCODES = frozenset({
    0x03, 0x04, 0x06, 0x21, 0x22, 0x24, 0x28, 0x29, 0x2A, 0x2F, 0x61, 0x62, 0x63, 0x66, 0x67,
    0x6A, 0x6B, 0x72, 0x91, 0x92, 0x93, 0x96, 0x97, 0x9A, 0x9B, 0x9D,
})

STATUS_OK = 0x0000
STATUS_NO_TAGS = 0x0400
STATUS_NAMES = {
    0x0100: "wrong number of data", 0x0101: "invalid opcode", 0x0105: "invalid parameter",
    0x0400: "no tags found", 0x0401: "no protocol", 0x0402: "invalid protocol",
    0x0503: "antenna not connected", 0x0504: "temperature exceeds limits",
    0x0505: "high return loss", 0x0600: "tag buffer: not enough tags",
    0x0601: "tag buffer full", 0x0602: "repeated tag ID", 0x0603: "number of tags too large",
    0x7F00: "unknown error", 0x7F01: "firmware assert",
}
# statuses that answer "nothing there" rather than signal a problem
_QUIET_STATUSES = frozenset({STATUS_NO_TAGS, 0x0600})

# metadata flags: which fields a tag record carries, in this order
META_READCOUNT = 0x0001
META_RSSI = 0x0002
META_ANTENNA = 0x0004
META_FREQUENCY = 0x0008
META_TIMESTAMP = 0x0010
META_PHASE = 0x0020
META_PROTOCOL = 0x0040
META_DATA = 0x0080
META_GPIO = 0x0100
META_GEN2_Q = 0x0200
META_GEN2_LF = 0x0400
META_GEN2_TARGET = 0x0800
META_BRAND = 0x1000
META_ALL = 0x1FFF
META_STREAMING = 0x01FF  # what SparkFun's start-reading blob asks for
# fields after DATA, which TagRead does not carry: skipped when decoding
_TRAILING_META = ((META_GPIO, 1), (META_GEN2_Q, 1), (META_GEN2_LF, 1), (META_GEN2_TARGET, 1),
                  (META_BRAND, 2))

OPTION_METADATA = 0x10  # option byte: metadata flags present
SEARCH_ANTENNA_LIST = 0x0003
SEARCH_STREAMING = 0x0008
SEARCH_LARGE_POPULATION = 0x0010
SEARCH_CONTINUOUS = SEARCH_LARGE_POPULATION | SEARCH_STREAMING | SEARCH_ANTENNA_LIST  # 0x001B
RESPONSE_CYCLE_END, RESPONSE_TAG, RESPONSE_STATUS = 0x00, 0x01, 0x02
GEN2_PROTOCOL = 0x05

_CRC_NIBBLES = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)


def crc16(data: bytes | bytearray) -> int:
    """ThingMagic CRC (serial_reader_l3.c ``tm_crc``): nibble table, init 0xFFFF."""
    crc = 0xFFFF
    for b in data:
        crc = (((crc << 4) | (b >> 4)) ^ _CRC_NIBBLES[crc >> 12]) & 0xFFFF
        crc = (((crc << 4) | (b & 0x0F)) ^ _CRC_NIBBLES[crc >> 12]) & 0xFFFF
    return crc


def gen2_crc16(data: bytes) -> int:
    """The CRC-16 a Gen2 tag backscatters after PC+EPC (poly 0x1021, init and xorout 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc ^ 0xFFFF


# ------------------------------------------------------------------ framing


class Framer(SizedFrameScanner):
    """Mercury frames out of a byte stream (see :mod:`devices.rfid.framing` for the API).

    Resync rule (Mercury API ``TMR_SR_receiveMessage``): a frame starts with 0xFF, then
    LEN <= 0xF8 and a plausible opcode (``opcodes``), and its CRC must verify; otherwise
    one byte is dropped and the scan goes on. ``commands=True`` frames host -> module
    commands instead (no status word), for simulators.
    """

    def __init__(self, *, opcodes: Iterable[int] = KNOWN_OPCODES, commands: bool = False):
        super().__init__()
        self._opcodes = frozenset(opcodes)
        self._overhead = 5 if commands else 7

    def first_candidate(self, buf: bytearray, pos: int) -> int:
        return buf.find(SOH, pos)

    def frame_size(self, buf: bytearray, pos: int) -> int:
        have = len(buf) - pos
        if have >= 2 and buf[pos + 1] > MAX_LEN:
            return -1
        if have < 3:
            return 0
        if buf[pos + 2] not in self._opcodes:
            return -1
        size = buf[pos + 1] + self._overhead
        if have < size:
            return 0
        if crc16(buf[pos + 1 : pos + size - 2]) != int.from_bytes(buf[pos + size - 2 : pos + size]):
            return -1
        return size


def _unwrap(frame: bytes, overhead: int) -> bytes:
    """Check a whole frame; return LEN..DATA (the CRC-covered body)."""
    if len(frame) < overhead or frame[0] != SOH:
        raise FrameError("not a Mercury frame: too short or no 0xFF start byte")
    if frame[1] > MAX_LEN or len(frame) != frame[1] + overhead:
        raise FrameError(f"LEN 0x{frame[1]:02X} does not match a frame of {len(frame)} bytes")
    if crc16(frame[1:-2]) != int.from_bytes(frame[-2:]):
        raise ChecksumError(f"CRC 0x{frame[-2:].hex()} != 0x{crc16(frame[1:-2]):04x}")
    return frame[1:-2]


# ------------------------------------------------------------------ decoding


class _Cursor:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FieldError(f"tag record truncated: need {n} bytes at offset {self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n))


def _parse_record(cur: _Cursor, flags: int) -> TagRead:
    """One tag record: metadata fields in flag order, then EPC_LEN, PC, [XPC], EPC, CRC."""
    if flags & ~META_ALL:
        raise FieldError(f"unknown metadata flags 0x{flags & ~META_ALL:04X}")
    count = cur.uint(1) if flags & META_READCOUNT else 1
    rssi = float(int.from_bytes(cur.take(1), signed=True)) if flags & META_RSSI else math.nan
    antenna = cur.uint(1) >> 4 if flags & META_ANTENNA else -1  # TX port (high nibble)
    freq = cur.uint(3) if flags & META_FREQUENCY else -1
    offset = cur.uint(4) if flags & META_TIMESTAMP else -1
    phase = cur.uint(2) if flags & META_PHASE else -1
    if flags & META_PROTOCOL:
        cur.take(1)
    if flags & META_DATA:
        cur.take((cur.uint(2) + 7) // 8)  # embedded tag-operation data, bit length first
    for flag, size in _TRAILING_META:
        if flags & flag:
            cur.take(size)
    bits = cur.uint(2)
    if bits % 8:
        raise FieldError(f"EPC length {bits} bits is not whole bytes")
    pc = cur.take(2)
    pc_len = 2
    if pc[0] & 0x02:  # XI: XPC_W1 follows, and XPC_W2 when XPC_W1's top bit is set
        pc_len += 2
        if cur.take(2)[0] & 0x80:
            pc_len += 2
            cur.take(2)
    epc_len = bits // 8 - pc_len - 2
    if epc_len <= 0:
        raise FieldError(f"EPC length {bits} bits leaves no EPC after PC and CRC")
    epc = cur.take(epc_len).hex().upper()
    cur.take(2)  # the tag's own CRC-16; the frame CRC already covers it
    return TagRead(epc, antenna, rssi, bool(flags & META_RSSI), count, offset, freq, phase)


def _status_detail(opcode: int, status: int, data: bytes) -> str:
    name = STATUS_NAMES.get(status, "unknown status")
    extra = f": {data.hex().upper()}" if data else ""
    return f"{name} (opcode 0x{opcode:02X}){extra}"


def _read_tag_multiple(data: bytes) -> list[Record]:
    # tag-count reply of a synchronous inventory (TMR_SR_cmdReadTagMultiple, by LEN)
    where = {4: (3, 1), 5: (4, 1), 7: (3, 4), 8: (4, 4)}.get(len(data))
    if where is not None:
        n = int.from_bytes(data[where[0] : where[0] + where[1]])
        return [ReaderStatus("response", OP_READ_TAG_MULTIPLE, f"{n} tags found", n)]
    head = 6 if data[:1] and data[0] & OPTION_METADATA else 4
    if len(data) < head:
        raise FieldError(f"read-tag-multiple reply of {len(data)} bytes")
    flags = int.from_bytes(data[3:5]) if head == 6 else 0
    kind, rest = data[head - 1], data[head:]
    if kind == RESPONSE_TAG:
        cur = _Cursor(rest)
        read = _parse_record(cur, flags)
        if cur.pos != len(rest):
            raise FieldError(f"{len(rest) - cur.pos} bytes after the tag record")
        return [read]
    if kind == RESPONSE_CYCLE_END:
        return [ReaderStatus("cycle_end", OP_READ_TAG_MULTIPLE, "end of search cycle")]
    if kind == RESPONSE_STATUS:
        report = f"status report {rest.hex().upper()}"
        return [ReaderStatus("response", OP_READ_TAG_MULTIPLE, report)]
    raise FieldError(f"unknown streaming response type 0x{kind:02X}")


def _get_tag_buffer(data: bytes) -> list[Record]:
    if len(data) < 4:
        raise FieldError(f"get-tag-buffer reply of {len(data)} bytes")
    flags, count = int.from_bytes(data[0:2]), data[3]
    cur = _Cursor(data, 4)
    reads: list[Record] = [_parse_record(cur, flags) for _ in range(count)]
    if cur.pos != len(data):
        raise FieldError(f"{len(data) - cur.pos} bytes after {count} tag records")
    return reads


def _multi_protocol(data: bytes) -> list[Record]:
    if data[:1] == b"\x02":
        return [ReaderStatus("cycle_end", OP_MULTI_PROTOCOL, "continuous reading stopped")]
    return [ReaderStatus("response", OP_MULTI_PROTOCOL, data.hex().upper())]


_HANDLERS: dict[int, Callable[[bytes], list[Record]]] = {
    OP_READ_TAG_MULTIPLE: _read_tag_multiple,
    OP_GET_TAG_BUFFER: _get_tag_buffer,
    OP_CLEAR_TAG_BUFFER: lambda _: [ReaderStatus("response", OP_CLEAR_TAG_BUFFER, "cleared")],
    OP_MULTI_PROTOCOL: _multi_protocol,
    OP_BOOT: lambda data: [ReaderStatus("boot", OP_BOOT, data.hex().upper())],
}


def decode(frame: bytes) -> list[Record]:
    """One whole module -> host frame -> records. Raises :class:`DecodeError` if malformed."""
    body = _unwrap(frame, 7)
    opcode, status, data = body[1], int.from_bytes(body[2:4]), body[4:]
    if status == STATUS_NO_TAGS and opcode == OP_READ_TAG_MULTIPLE and not data:
        return [ReaderStatus("keepalive", status, "keep-alive (no tags found)")]
    if status != STATUS_OK:
        kind = "response" if status in _QUIET_STATUSES else "health"
        return [ReaderStatus(kind, status, _status_detail(opcode, status, data))]
    handler = _HANDLERS.get(opcode)
    if handler is None:
        return [ReaderStatus("response", opcode, data.hex().upper())]
    return handler(data)


def decode_command(frame: bytes) -> tuple[int, bytes]:
    """One whole host -> module command -> (opcode, data); for simulators."""
    body = _unwrap(frame, 5)
    return body[1], body[2:]


# ------------------------------------------------------------------ encoding


def _u(value: int, nbytes: int, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 256**nbytes:
        raise ValueError(f"{name} must be an integer in 0..{256**nbytes - 1}, got {value!r}")
    return value.to_bytes(nbytes)


def encode_frame(opcode: int, data: bytes = b"", status: int = STATUS_OK) -> bytes:
    """A module -> host frame."""
    if len(data) > MAX_LEN:
        raise ValueError(f"{len(data)} data bytes do not fit one frame (max {MAX_LEN})")
    body = bytes([len(data)]) + _u(opcode, 1, "opcode") + _u(status, 2, "status") + data
    return bytes([SOH]) + body + crc16(body).to_bytes(2)


def encode_command(opcode: int, data: bytes = b"") -> bytes:
    """A host -> module command frame."""
    if len(data) > MAX_LEN:
        raise ValueError(f"{len(data)} data bytes do not fit one frame (max {MAX_LEN})")
    body = bytes([len(data)]) + _u(opcode, 1, "opcode") + data
    return bytes([SOH]) + body + crc16(body).to_bytes(2)


def _encode_record(read: TagRead, flags: int, pc: int | None, xpc: bytes, gpio: int) -> bytes:
    if flags & ~META_ALL:
        raise ValueError(f"unknown metadata flags 0x{flags & ~META_ALL:04X}")
    out = bytearray()
    if flags & META_READCOUNT:
        out += _u(read.read_count, 1, "read_count")
    if flags & META_RSSI:
        if not (read.rssi_dbm and float(read.rssi).is_integer() and -128 <= read.rssi <= 127):
            raise ValueError(f"RSSI must be whole dBm in -128..127, got {read.rssi!r}")
        out += int(read.rssi).to_bytes(1, signed=True)
    if flags & META_ANTENNA:
        if not 0 <= read.antenna <= 15:
            raise ValueError(f"antenna must be 0..15, got {read.antenna!r}")
        out.append(read.antenna << 4 | read.antenna)  # TX port = RX port
    if flags & META_FREQUENCY:
        out += _u(read.frequency_khz, 3, "frequency_khz")
    if flags & META_TIMESTAMP:
        out += _u(read.offset_ms, 4, "offset_ms")
    if flags & META_PHASE:
        out += _u(read.phase_deg, 2, "phase_deg")
    if flags & META_PROTOCOL:
        out.append(GEN2_PROTOCOL)
    if flags & META_DATA:
        out += b"\x00\x00"  # no embedded tag-operation data
    for flag, size in _TRAILING_META:
        if flags & flag:
            out += _u(gpio, 1, "gpio") if flag == META_GPIO else bytes(size)
    epc = bytes.fromhex(read.epc_hex)
    if not epc:
        raise ValueError("empty EPC")
    pc_word = (len(epc) + 1) // 2 << 11 if pc is None else pc
    want_xpc = 0 if not pc_word & 0x0200 else (4 if xpc[:1] and xpc[0] & 0x80 else 2)
    if len(xpc) != want_xpc:
        raise ValueError(f"PC 0x{pc_word:04X} needs {want_xpc} XPC bytes, got {len(xpc)}")
    tag = _u(pc_word, 2, "pc") + xpc + epc
    return bytes(out) + ((len(tag) + 2) * 8).to_bytes(2) + tag + gen2_crc16(tag).to_bytes(2)


def encode_stream_frame(
    response_type: int, payload: bytes = b"", metadata_flags: int = META_STREAMING,
    *, search_flags: int = SEARCH_CONTINUOUS,
) -> bytes:
    """A streamed 0x22 frame: option 0x10, search flags, metadata flags, response type, payload."""
    head = bytes([OPTION_METADATA]) + _u(search_flags, 2, "search_flags")
    head += _u(metadata_flags, 2, "metadata_flags") + _u(response_type, 1, "response_type")
    return encode_frame(OP_READ_TAG_MULTIPLE, head + payload)


def encode_tag_record_frame(
    read: TagRead, metadata_flags: int = META_STREAMING, *, search_flags: int = SEARCH_CONTINUOUS,
    pc: int | None = None, xpc: bytes = b"", gpio: int = 0,
) -> bytes:
    """One streamed tag record, the inverse of :func:`decode`. Fields that TagRead does not
    carry are written as: protocol Gen2, no embedded data, ``gpio``, zero Q/LF/target/brand.
    ``pc`` defaults to the EPC length in words; the tag CRC is computed."""
    record = _encode_record(read, metadata_flags, pc, xpc, gpio)
    return encode_stream_frame(RESPONSE_TAG, record, metadata_flags, search_flags=search_flags)


def encode_tag_buffer_response(
    reads: Sequence[TagRead], metadata_flags: int = META_STREAMING,
) -> bytes:
    """A 0x29 get-tag-buffer reply holding ``reads`` (as many as fit in one frame)."""
    records = b"".join(_encode_record(r, metadata_flags, None, b"", 0) for r in reads)
    head = _u(metadata_flags, 2, "metadata_flags") + b"\x00" + _u(len(reads), 1, "tag count")
    return encode_frame(OP_GET_TAG_BUFFER, head + records)


def encode_read_tag_multiple_response(
    count: int, *, search_flags: int = SEARCH_ANTENNA_LIST,
) -> bytes:
    """The 0x22 tag-count reply of a synchronous inventory: u8 count (LEN 4), or u32
    (LEN 7) when the search asked for a large tag population."""
    width = 4 if search_flags & SEARCH_LARGE_POPULATION else 1
    head = bytes([OPTION_METADATA]) + _u(search_flags, 2, "search_flags")
    data = head + _u(count, width, "count")
    return encode_frame(OP_READ_TAG_MULTIPLE, data)


def encode_keepalive() -> bytes:
    """``FF 00 22 04 00 84 E0``: sent about once a second while streaming."""
    return encode_frame(OP_READ_TAG_MULTIPLE, b"", STATUS_NO_TAGS)


def encode_stop_response() -> bytes:
    """The 0x2F reply that ends continuous reading (DATA[0] = 0x02)."""
    return encode_frame(OP_MULTI_PROTOCOL, b"\x02")


# ------------------------------------------------------------------ commands


def _read_multiple_data(timeout_ms: int, metadata_flags: int, search_flags: int) -> bytes:
    return (bytes([OPTION_METADATA]) + _u(search_flags, 2, "search_flags")
            + _u(timeout_ms, 2, "timeout_ms") + _u(metadata_flags, 2, "metadata_flags"))


def cmd_read_tag_multiple(
    timeout_ms: int, metadata_flags: int = META_STREAMING, *,
    search_flags: int = SEARCH_ANTENNA_LIST,
) -> bytes:
    """0x22: inventory for ``timeout_ms`` into the module's buffer; replies with the tag count."""
    data = _read_multiple_data(timeout_ms, metadata_flags, search_flags)
    return encode_command(OP_READ_TAG_MULTIPLE, data)


def cmd_get_tag_buffer(metadata_flags: int = META_STREAMING) -> bytes:
    """0x29: fetch buffered tag records with these metadata fields (read options 0)."""
    return encode_command(OP_GET_TAG_BUFFER, _u(metadata_flags, 2, "metadata_flags") + b"\x00")


def cmd_clear_tag_buffer() -> bytes:
    """0x2A: clear the module's tag buffer."""
    return encode_command(OP_CLEAR_TAG_BUFFER)


def cmd_start_continuous(
    metadata_flags: int = META_STREAMING, *,
    search_flags: int = SEARCH_CONTINUOUS, timeout_ms: int = 1000,
) -> bytes:
    """0x2F continuous reading wrapping an embedded 0x22 (defaults: SparkFun's startReading)."""
    embedded = _read_multiple_data(timeout_ms, metadata_flags, search_flags)
    data = b"\x00\x00\x01\x22\x00\x00" + bytes([GEN2_PROTOCOL, len(embedded), OP_READ_TAG_MULTIPLE])
    return encode_command(OP_MULTI_PROTOCOL, data + embedded)


def cmd_stop_continuous() -> bytes:
    """``FF 03 2F 00 00 02 5E 86``."""
    return encode_command(OP_MULTI_PROTOCOL, b"\x00\x00\x02")
