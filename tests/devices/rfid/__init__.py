"""Shared checks for the reader protocol tests: the record invariants and stream helpers."""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Callable, Sequence

from devices.errors import DecodeError
from devices.records import ReaderStatus, TagRead
from devices.rfid.framing import Framer

KINDS = {"keepalive", "cycle_end", "more", "health", "response", "boot"}
_HEX = re.compile(r"(?:[0-9A-F]{2})+")

Decode = Callable[[bytes], list[TagRead | ReaderStatus]]


def check_record(rec: TagRead | ReaderStatus) -> None:
    """Assert the invariants every decoded reader record must satisfy."""
    if isinstance(rec, ReaderStatus):
        assert rec.kind in KINDS, rec
        assert rec.code >= 0 and rec.count >= -1, rec
        return
    assert isinstance(rec, TagRead), rec
    assert _HEX.fullmatch(rec.epc_hex), rec
    assert rec.antenna >= -1 and rec.read_count >= 0, rec
    assert rec.offset_ms >= -1 and rec.frequency_khz >= -1 and rec.phase_deg >= -1, rec
    if math.isnan(rec.rssi):
        assert not rec.rssi_dbm, rec
    elif rec.rssi_dbm:
        assert -128.0 <= rec.rssi <= 127.0, rec
    else:
        assert 0.0 <= rec.rssi <= 255.0 and rec.rssi.is_integer(), rec


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo len + 1, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(framer: Framer, chunks: Sequence[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def decode_stream(framer: Framer, decode: Decode, data: bytes) -> list[TagRead | ReaderStatus]:
    """Frame and decode a whole stream; DecodeError frames are skipped (dead letters)."""
    out: list[TagRead | ReaderStatus] = []
    for frame in [*framer.feed(data), *framer.flush()]:
        try:
            out += decode(frame)
        except DecodeError:
            continue
    for rec in out:
        check_record(rec)
    return out


def assert_prefixes_incomplete(make_framer: Callable[[], Framer], decode: Decode,
                               frame: bytes) -> None:
    """Every proper prefix of a frame: the framer returns nothing and decode raises
    DecodeError or returns []."""
    for n in range(len(frame)):
        prefix = frame[:n]
        assert make_framer().feed(prefix) == [], prefix.hex()
        with contextlib.suppress(DecodeError):
            assert decode(prefix) == [], prefix.hex()
