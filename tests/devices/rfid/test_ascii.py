"""Line-oriented serial ASCII readers: the accepted line forms, framer, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError, FieldError, FrameError
from devices.records import TagRead
from devices.rfid import PROTOCOLS
from devices.rfid import ascii as a
from tests.devices.rfid import (
    assert_prefixes_incomplete,
    check_record,
    decode_stream,
    feed_all,
    split,
)

# READERS.md 1c: Advanced ID ST110 user manual p.34, each tag as <24 hex>\r
ST110 = b"350646766781206510000011\r"
# READERS.md 1c: Parallax-style framing, "\n" + 10 ASCII hex + "\r" (digits made up here)
PARALLAX = b"\n0F0184F07A\r"
# milepost's optional fields (this module's own forms)
WITH_ANTENNA = b"3074257BF7194E4000001A85,2\r\n"
WITH_RSSI = b"3074257bf7194e4000001a85 , 1 , -61.5\n"
RSSI_ONLY = b"3154257BF4499602D2000000,,-70\r"
LINES = [ST110, WITH_ANTENNA, WITH_RSSI, RSSI_ONLY]
# a frame is a line up to and including its first CR or LF (CRLF: the LF is skipped)
FRAMES = [line.rstrip(b"\n") if line.endswith(b"\r\n") else line for line in LINES]
SGTIN = "3074257BF7194E4000001A85"


def test_worked_lines() -> None:
    assert a.decode(ST110) == [TagRead("350646766781206510000011")]
    assert a.Framer().feed(WITH_ANTENNA) == [WITH_ANTENNA[:-1]]
    assert a.decode(WITH_ANTENNA[:-1]) == [TagRead(SGTIN, 2)]
    assert a.decode(WITH_RSSI) == [TagRead(SGTIN, 1, -61.5, True)]
    assert a.decode(RSSI_ONLY) == [TagRead("3154257BF4499602D2000000", -1, -70.0, True)]
    assert a.decode(b"  \t\r") == []


def test_parallax_style_leading_lf() -> None:
    framer = a.Framer()
    [frame] = framer.feed(PARALLAX)
    assert a.decode(frame) == [TagRead("0F0184F07A")]
    assert framer.discarded == 0


@pytest.mark.parametrize("line", [
    b"OK\r", b"READY>\r", b"31\r", b"ABC\r", b"ABCDE\r", b"XYZW\r",  # not EPCs
    b"AABB,1,2,3\r",  # too many fields
    b"AABB,256\r", b"AABB,-1\r", b"AABB,x\r",  # antenna
    b"AABB,1,-200\r", b"AABB,1,dBm\r", b"AABB,1,nan\r", b"AABB,1,inf\r",  # RSSI
    ("AABB\u00e9\r").encode(), b"AA" * 63 + b"\r",  # not ASCII; over 124 hex digits
])
def test_rejected_lines(line: bytes) -> None:
    with pytest.raises(FieldError):
        a.decode(line)


def test_frames_need_exactly_one_terminator() -> None:
    with pytest.raises(FrameError):
        a.decode(b"AABB")
    with pytest.raises(FrameError):
        a.decode(b"AABB\rCCDD\r")
    with pytest.raises(FrameError):
        a.decode(b"")
    with pytest.raises(FrameError):  # CRLF is two terminators: the framer cuts at CR
        a.decode(WITH_ANTENNA)


@pytest.mark.parametrize("frame", FRAMES, ids=repr)
def test_every_prefix_is_incomplete(frame: bytes) -> None:
    assert_prefixes_incomplete(a.Framer, a.decode, frame)


# ------------------------------------------------------------------ framer


def test_cr_lf_and_crlf() -> None:
    framer = a.Framer()
    frames = framer.feed(b"AABB\rCCDD\nEEFF\r\n\r\n\n1122")
    assert frames == [b"AABB\r", b"CCDD\n", b"EEFF\r"]
    assert framer.pending == 4 and framer.feed(b"\r") == [b"1122\r"]


def test_over_long_line_is_garbage() -> None:
    framer = a.Framer(max_line=8)
    assert framer.feed(b"0123456789AB") == []  # past the limit: dropped at once
    assert framer.pending == 0
    assert framer.feed(b"CD\rAABB\r") == [b"AABB\r"]
    assert framer.discarded == 15
    assert framer.drain_garbage() == [b"0123456789AB", b"CD\r"]
    assert framer.feed(b"0123456789\rAABB\r") == [b"AABB\r"]  # long line, whole
    assert framer.feed(b"01234567\r") == [b"01234567\r"]  # exactly the limit


def test_flush_discards_an_unterminated_line() -> None:
    framer = a.Framer()
    assert framer.feed(b"AABB\rCCDD") == [b"AABB\r"]
    assert framer.flush() == []
    assert (framer.pending, framer.discarded, framer.drain_garbage()) == (0, 4, [b"CCDD"])


def test_framer_buffer_is_bounded() -> None:
    framer = a.Framer()
    for _ in range(100):
        framer.feed(b"A" * 100)
        assert framer.pending <= a.MAX_LINE


STREAM = b"".join(LINES) + PARALLAX


@given(st.lists(st.integers(0, len(STREAM) + 600), max_size=12),
       st.binary(max_size=300), st.integers(4, 40))
def test_framer_is_independent_of_split_points(cuts: list[int], noise: bytes, limit: int) -> None:
    data = noise + STREAM + noise
    whole = a.Framer(limit)
    expected = whole.feed(data)
    byte_wise, chunked = a.Framer(limit), a.Framer(limit)
    assert feed_all(byte_wise, [data[i : i + 1] for i in range(len(data))]) == expected
    assert feed_all(chunked, split(data, cuts)) == expected
    for framer in (whole, byte_wise, chunked):  # a partial over-long tail may still be held
        assert framer.flush() == []
    assert byte_wise.discarded == chunked.discarded == whole.discarded


# ------------------------------------------------------------------ round trips

reads = st.builds(
    TagRead,
    epc_hex=st.binary(min_size=2, max_size=62).map(lambda b: b.hex().upper()),
    antenna=st.integers(-1, 255),
    rssi=st.one_of(st.just(math.nan), st.floats(-128, 127)),
).map(lambda r: TagRead(r.epc_hex, r.antenna, r.rssi, not math.isnan(r.rssi)))


@given(st.lists(st.tuples(reads, st.sampled_from([b"\r", b"\n", b"\r\n"])), min_size=1,
                max_size=6),
       st.lists(st.integers(0, 2000), max_size=8))
def test_encode_frame_decode_round_trip(
    items: list[tuple[TagRead, bytes]], cuts: list[int],
) -> None:
    data = b"".join(a.encode_line(r, t) for r, t in items)
    framer = a.Framer()
    frames = feed_all(framer, split(data, cuts))
    assert [rec for f in frames for rec in a.decode(f)] == [r for r, _ in items]
    assert framer.discarded == 0


def test_encode_line_forms() -> None:
    assert a.encode_line(TagRead(SGTIN)) == SGTIN.encode() + b"\r\n"
    assert a.encode_line(TagRead(SGTIN, 2, -61.5, True), b"\r") == SGTIN.encode() + b",2,-61.5\r"
    assert a.encode_line(TagRead(SGTIN, -1, -70.0, True)) == SGTIN.encode() + b",,-70\r\n"
    for bad in (TagRead("ABC"), TagRead(SGTIN, rssi=60.0), TagRead(SGTIN, read_count=2),
                TagRead(SGTIN, 300)):
        with pytest.raises(ValueError):
            a.encode_line(bad)


# ------------------------------------------------------------------ robustness


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_records_or_decode_error(data: bytes) -> None:
    decode_stream(a.Framer(), a.decode, data)
    try:
        for rec in a.decode(data):
            check_record(rec)
    except DecodeError:
        pass


@given(st.text(alphabet="0123456789abcdefABCDEF,.+- \teExyz", max_size=80))
def test_near_miss_lines_give_records_or_decode_error(text: str) -> None:
    try:
        for rec in a.decode(text.encode() + b"\r"):
            check_record(rec)
    except DecodeError:
        pass


def test_registry_line() -> None:
    assert PROTOCOLS["ascii"] == (a.Framer, a.decode)
