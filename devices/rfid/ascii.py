"""Line-oriented serial ASCII readers (READERS.md section 1c): one tag per line.

A frame is one line including its terminator (CR or LF; CRLF gives one frame, the LF
then ends an empty line, which is skipped). Accepted lines, surrounding spaces ignored::

    EPC                e.g. 350646766781206510000011      (Advanced ID ST110, wedge over CDC)
    EPC,ANTENNA        e.g. 3074257BF7194E4000001A85,2
    EPC,ANTENNA,RSSI   e.g. 3074257BF7194E4000001A85,2,-61.5   (RSSI in dBm)
    EPC,,RSSI          antenna unknown

EPC is 4 to 124 hex digits, an even number, either case (stored upper-case); ANTENNA a
decimal 0..255; RSSI a decimal dBm in -128..127. A blank line decodes to nothing; any
other line (a reader's ``OK``, ``READY>``, noise) raises :class:`FieldError`.
"""

from __future__ import annotations

import math
import re

from devices.errors import FieldError, FrameError
from devices.records import ReaderStatus, TagRead
from devices.rfid.framing import BufferedFramer

Record = TagRead | ReaderStatus

MAX_LINE = 256  # bytes before the terminator; longer lines are discarded as garbage

_EOL = re.compile(rb"[\r\n]")
_EPC = re.compile(r"(?:[0-9A-F]{2}){2,62}")
_ANTENNA = re.compile(r"[0-9]{1,3}")
_RSSI = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,3})?")


class Framer(BufferedFramer):
    """Lines out of a byte stream (see :mod:`devices.rfid.framing` for the API).

    A line longer than ``max_line`` bytes is discarded as garbage up to and including
    its terminator, so the buffer never holds more than ``max_line`` bytes.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        super().__init__()
        self._max = max_line
        self._skipping = False  # inside an over-long line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        buf, frames, pos = self._buf, [], 0
        while (eol := _EOL.search(buf, pos)) is not None:
            end = eol.end()
            if self._skipping or end - 1 - pos > self._max:
                self._garbage.add(buf[pos:end])
                self._skipping = False
            elif end - 1 > pos:
                frames.append(bytes(buf[pos:end]))
            pos = end
        if len(buf) - pos > self._max:
            self._garbage.add(buf[pos:])
            self._skipping = True
            pos = len(buf)
        del buf[:pos]
        return frames

    def flush(self) -> list[bytes]:
        """The line went idle: an unterminated line is garbage."""
        self._garbage.add(self._buf)
        self._buf.clear()
        self._skipping = False
        return []


def decode(frame: bytes) -> list[Record]:
    """One line with its terminator -> [] (blank) or one TagRead."""
    if not frame or frame[-1] not in b"\r\n":
        raise FrameError("line has no CR or LF terminator")
    if _EOL.search(frame, 0, len(frame) - 1):
        raise FrameError("more than one line")
    try:
        text = frame[:-1].decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise FieldError("line is not ASCII") from exc
    if not text:
        return []
    fields = [f.strip() for f in text.split(",")]
    if len(fields) > 3:
        raise FieldError(f"{len(fields)} fields; expected EPC[,ANTENNA[,RSSI]]")
    epc = fields[0].upper()
    if not _EPC.fullmatch(epc):
        raise FieldError(f"not an EPC (4-124 hex digits, even): {fields[0][:40]!r}")
    antenna, rssi = -1, math.nan
    if len(fields) > 1 and fields[1]:
        if not _ANTENNA.fullmatch(fields[1]) or int(fields[1]) > 255:
            raise FieldError(f"antenna must be 0..255, got {fields[1][:20]!r}")
        antenna = int(fields[1])
    if len(fields) > 2 and fields[2]:
        if not _RSSI.fullmatch(fields[2]) or not -128 <= float(fields[2]) <= 127:
            raise FieldError(f"RSSI must be dBm in -128..127, got {fields[2][:20]!r}")
        rssi = float(fields[2])
    return [TagRead(epc, antenna, rssi, not math.isnan(rssi))]


def encode_line(read: TagRead, terminator: bytes = b"\r\n") -> bytes:
    """The inverse of :func:`decode`: ``EPC[,ANTENNA[,RSSI]]`` + terminator."""
    if (read.read_count, read.offset_ms, read.frequency_khz, read.phase_deg) != (1, -1, -1, -1):
        raise ValueError("an ASCII line carries no read count, timestamp, frequency or phase")
    if terminator not in (b"\r", b"\n", b"\r\n"):
        raise ValueError("terminator must be CR, LF or CRLF")
    epc = read.epc_hex.upper()
    if not _EPC.fullmatch(epc):
        raise ValueError(f"not an EPC (4-124 hex digits, even): {read.epc_hex!r}")
    fields = [epc]
    if read.antenna != -1:
        if not 0 <= read.antenna <= 255:
            raise ValueError(f"antenna must be 0..255, got {read.antenna}")
        fields.append(str(read.antenna))
    if not math.isnan(read.rssi):
        if not (read.rssi_dbm and -128 <= read.rssi <= 127):
            raise ValueError(f"RSSI must be dBm in -128..127, got {read.rssi!r}")
        if len(fields) == 1:
            fields.append("")
        fields.append(str(int(read.rssi)) if read.rssi.is_integer() else repr(read.rssi))
    return ",".join(fields).encode("ascii") + terminator
