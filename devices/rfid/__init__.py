"""Serial RFID gate reader protocols: one module per reader family, framing apart from
decoding, and the registry the ingest looks a gate's ``protocol`` up in."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from devices.records import ReaderStatus, TagRead
from devices.rfid import ascii, chafon, mercury
from devices.rfid.framing import Framer


class ReaderProtocol(NamedTuple):
    framer: Callable[[], Framer]
    decode: Callable[[bytes], list[TagRead | ReaderStatus]]


PROTOCOLS: dict[str, ReaderProtocol] = {
    "mercury": ReaderProtocol(mercury.Framer, mercury.decode),
    "chafon18": ReaderProtocol(chafon.Framer, chafon.decode18),
    "chafon288": ReaderProtocol(chafon.Framer, chafon.decode288),
    "ascii": ReaderProtocol(ascii.Framer, ascii.decode),
}

__all__ = ["PROTOCOLS", "Framer", "ReaderProtocol"]
