"""Chafon UHFReader18 / UHFReader288: CRC, worked frames from READERS.md 1b, framer,
decoders, encoders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.records import ReaderStatus, TagRead
from devices.rfid import PROTOCOLS
from devices.rfid import chafon as c
from tests.devices.rfid import (
    Decode,
    assert_prefixes_incomplete,
    check_record,
    decode_stream,
    feed_all,
    split,
)

H = bytes.fromhex
MORE = ReaderStatus("more", 0x03, "more frames follow")
DONE = ReaderStatus("cycle_end", 0x01, "inventory finished")

# --- worked command frames, READERS.md 1b "Worked command frames [V]" ---
INVENTORY18_BROADCAST = H("04 FF 01 1B B4")
INVENTORY18_ADR0 = H("04 00 01 DB 4B")
GET_READER_INFO = H("04 FF 21 19 95")
INVENTORY288_DEFAULTS = H("0D FF 01 0F 00 01 00 00 00 00 80 14 C0 3A")  # wabson's defaults

# --- UHFReader18 responses ---
# READERS.md 1b (wabson/chafon-rfid@05b55f3 tests/test_uhfreader18.py RESP_TAGS_1)
R18_ONE = H("13 00 01 03 01 0C 000000000000000000000313 3F 39")
# READERS.md 1b "A 2-tag frame" (same file, RESP_MULTIPLE_TAGS, written out in full)
R18_TWO = H("20 00 01 03 02 0C 000000000000000000000313 0C 000000000000000000000314 9A C9")
# wabson tests/test_uhfreader18.py RESP_TAGS_3
R18_THREE = H("13 00 01 03 01 0C 49440000000000000A000334 A5 FB")

# --- UHFReader288 responses ---
# READERS.md 1b worked example (wabson tests/test_uhfreader288.py RESP_TAGS_2)
R288_SGTIN = H("15 00 01 03 01 01 0C 3039606303C74380001A0559 40 F9 3E")
# READERS.md 1b "No tags" = status 0x01 with Num = 0 (wabson RESP_NO_TAGS)
R288_NO_TAGS = H("07 00 01 01 01 00 1E 4B")
# READERS.md 1b "Four-byte EPCs exist" (wabson RESP_TAGS_4)
R288_FOUR_BYTE = H("0D 00 01 03 01 01 04 00323038 6D A3 D2")
# READERS.md 1b, quoted from Timereversal/rfidtime transport/packet.go (reference only)
R288_RFIDTIME = H("15 00 01 03 01 01 0C E28068940000400A9D22A9EB 5D F9 C3")
# wabson tests/test_uhfreader288.py RESP_TAGS_3 (antenna mask 0x04 = antenna 3)
R288_ANT3 = H("15 00 01 03 04 01 0C 49440000000000000A000334 64 25 C0")
# wabson tests/test_uhfreader288.py RESP_MULTIPLE_TAGS
R288_TWO = H("23 00 01 03 01 02 0C 000000000000000000000313 6B"
             " 0C 000000000000000000000314 6C 70 F2")
# READERS.md 1b "Get reader info (0x21) response" (wabson tests/test_base.py)
READER_INFO = H("11 00 21 00 00 16 0C 03 4E 00 1E 0A 01 00 00 00 E6 51")

WORKED_COMMANDS = [INVENTORY18_BROADCAST, INVENTORY18_ADR0, GET_READER_INFO, INVENTORY288_DEFAULTS]
R18 = [R18_ONE, R18_TWO, R18_THREE]
R288 = [R288_SGTIN, R288_NO_TAGS, R288_FOUR_BYTE, R288_RFIDTIME, R288_ANT3, R288_TWO]
ALL = [*WORKED_COMMANDS, *R18, *R288, READER_INFO]


def _u(epc: str, ant: int = -1, rssi: float = math.nan) -> TagRead:
    return TagRead(epc, ant, rssi)


# ------------------------------------------------------------------ CRC


def test_crc_check_value() -> None:
    assert c.crc16(b"123456789") == 0x6F91


@pytest.mark.parametrize("frame", ALL, ids=lambda f: f.hex())
def test_whole_frame_crc_is_zero_and_lsb_first(frame: bytes) -> None:
    assert c.crc16(frame) == 0
    assert c.crc16(frame[:-2]).to_bytes(2, "little") == frame[-2:]
    assert frame[0] + 1 == len(frame)


# ------------------------------------------------------------------ commands


def test_command_builders_match_worked_frames() -> None:
    assert c.cmd_inventory18() == INVENTORY18_BROADCAST
    assert c.cmd_inventory18(adr=0x00) == INVENTORY18_ADR0
    assert c.encode_command(c.CMD_READER_INFO) == GET_READER_INFO
    assert c.cmd_inventory288() == INVENTORY288_DEFAULTS


def test_inventory288_options() -> None:
    # wabson test_inventory_command: q 2, session 1, mask source 2, target 1, scan time 3
    frame = c.cmd_inventory288(q=2, session=1, mask_mem=2, target=1, scan_time_100ms=3)
    assert c.decode_command(frame) == (0xFF, 0x01, H("020102000000018003"))
    frame = c.cmd_inventory288(statistics=True, antenna=2, mask_bits=12, mask_data=H("30 70"),
                               tid=(0, 6))
    assert c.decode_command(frame)[2] == H("8F 00 01 0000 0C 3070 00 06 00 81 14")
    with pytest.raises(ValueError):
        c.cmd_inventory288(mask_bits=9, mask_data=H("00"))


@pytest.mark.parametrize("frame", WORKED_COMMANDS, ids=lambda f: f.hex())
def test_worked_commands_frame_and_decode(frame: bytes) -> None:
    assert c.Framer().feed(frame) == [frame]
    adr, cmd, _ = c.decode_command(frame)
    assert (adr, cmd) == (frame[1], frame[2])


# ------------------------------------------------------------------ decoding


def test_uhfreader18_worked_frames() -> None:
    assert c.decode18(R18_ONE) == [_u("000000000000000000000313"), MORE]
    assert c.decode18(R18_TWO) == [
        _u("000000000000000000000313"), _u("000000000000000000000314"), MORE]
    assert c.decode18(R18_THREE) == [_u("49440000000000000A000334"), MORE]


def test_uhfreader288_worked_frames() -> None:
    assert c.decode288(R288_SGTIN) == [_u("3039606303C74380001A0559", 1, 0x40), MORE]
    assert c.decode288(R288_NO_TAGS) == [DONE]
    assert c.decode288(R288_FOUR_BYTE) == [_u("00323038", 1, 0x6D), MORE]
    assert c.decode288(R288_RFIDTIME) == [_u("E28068940000400A9D22A9EB", 1, 0x5D), MORE]
    assert c.decode288(R288_ANT3) == [_u("49440000000000000A000334", 3, 0x64), MORE]
    assert c.decode288(R288_TWO) == [
        _u("000000000000000000000313", 1, 0x6B), _u("000000000000000000000314", 1, 0x6C), MORE]


def test_reader_info_is_a_response() -> None:
    for decode in (c.decode18, c.decode288):
        [rec] = decode(READER_INFO)
        assert isinstance(rec, ReaderStatus) and (rec.kind, rec.code) == ("response", 0x21)


def test_encoders_reproduce_worked_frames() -> None:
    assert c.encode_inventory_response18(["000000000000000000000313"], c.STATUS_MORE) == R18_ONE
    assert c.encode_inventory_response18(
        ["000000000000000000000313", "000000000000000000000314"], c.STATUS_MORE) == R18_TWO
    assert c.encode_inventory_response288(
        [_u("3039606303C74380001A0559", 1, 0x40)], c.STATUS_MORE) == R288_SGTIN
    assert c.encode_inventory_response288([], c.STATUS_DONE) == R288_NO_TAGS
    assert c.encode_inventory_response288(
        [_u("49440000000000000A000334", 3, 0x64)], c.STATUS_MORE, antenna=3) == R288_ANT3


@pytest.mark.parametrize(("status", "kind"), [
    (c.STATUS_DONE, "cycle_end"), (c.STATUS_TIMEOUT, "cycle_end"),
    (c.STATUS_MORE, "more"), (c.STATUS_BUFFER_FULL, "cycle_end"),
])
def test_inventory_statuses(status: int, kind: str) -> None:
    for decode, frame in ((c.decode18, c.encode_inventory_response18([], status)),
                          (c.decode288, c.encode_inventory_response288([], status))):
        [rec] = decode(frame)
        assert isinstance(rec, ReaderStatus) and (rec.kind, rec.code) == (kind, status)


def test_antenna_error_and_unknown_status_are_health() -> None:
    [rec] = c.decode288(c.encode_response(c.CMD_INVENTORY, c.STATUS_ANTENNA_ERROR))
    assert rec == ReaderStatus("health", 0xF8, "antenna error")
    [rec] = c.decode18(c.encode_response(c.CMD_INVENTORY, 0xFB, H("01")))
    assert isinstance(rec, ReaderStatus) and (rec.kind, rec.code) == ("health", 0xFB)


def test_statistics_and_heartbeat() -> None:
    [stats] = c.decode288(c.encode_statistics(2, 150, 123_456))
    assert isinstance(stats, ReaderStatus)
    assert (stats.kind, stats.code, stats.count) == ("response", 0x26, 123_456)
    assert "read rate 150" in stats.detail
    for decode in (c.decode18, c.decode288):
        [beat] = decode(c.encode_heartbeat(7, 99, bytes(range(8))))
        assert isinstance(beat, ReaderStatus)
        assert (beat.kind, beat.code, beat.count) == ("keepalive", 0x28, 99)
        assert "packet 7" in beat.detail and "0001020304050607" in beat.detail


def test_autonomous_output() -> None:
    assert c.decode18(c.encode_autonomous18("3074257BF7194E4000001A85")) == [
        _u("3074257BF7194E4000001A85")]
    read = _u("3074257BF7194E4000001A85", 4, 77)
    assert c.decode288(c.encode_autonomous288(read)) == [read]


def test_malformed_frames() -> None:
    with pytest.raises(ChecksumError):
        c.decode288(R288_SGTIN[:-1] + b"\x00")
    with pytest.raises(FrameError):
        c.decode288(R288_SGTIN + b"\x00")
    with pytest.raises(FrameError):
        c.decode288(b"\x04" + R288_SGTIN[1:])
    bad = [
        c.encode_response(c.CMD_INVENTORY, 3, H("03 01 02 AABB 40")),  # two antennas in mask
        c.encode_response(c.CMD_INVENTORY, 3, H("01 02 02 AABB 40")),  # Num 2, one tag
        c.encode_response(c.CMD_INVENTORY, 3, H("01 01 02 AABB 40 00")),  # trailing byte
        c.encode_response(c.CMD_INVENTORY, 3, H("01 01 00 40")),  # empty EPC
        c.encode_response(c.CMD_INVENTORY, 3, H("")),  # no Ant / Num
        c.encode_response(c.RECMD_AUTONOMOUS, 0, H("01 05 AABB 40")),  # Len disagrees
        c.encode_response(c.RECMD_AUTONOMOUS, 0x28, bytes(15)),  # short heartbeat
        c.encode_response(c.CMD_INVENTORY, 0x26, bytes(6)),  # short statistics
    ]
    for frame in bad:
        with pytest.raises(FieldError):
            c.decode288(frame)
    for frame in (c.encode_response(c.CMD_INVENTORY, 3, H("02 02 AABB")),
                  c.encode_response(c.CMD_INVENTORY, 3, H("")),
                  c.encode_response(c.RECMD_AUTONOMOUS, 0, H(""))):
        with pytest.raises(FieldError):
            c.decode18(frame)


def test_encoders_refuse_what_the_protocol_cannot_carry() -> None:
    with pytest.raises(ValueError):
        c.encode_inventory_response288([TagRead("AABB", 1, -60.0, True)])  # dBm
    with pytest.raises(ValueError):
        c.encode_inventory_response288([_u("AABB", 2, 60)], antenna=1)  # other antenna
    with pytest.raises(ValueError):
        c.encode_inventory_response288([TagRead("AABB", 1, 60.0, read_count=3)])
    with pytest.raises(ValueError):
        c.encode_inventory_response18([""])


@pytest.mark.parametrize(("decode", "frame"), [
    *[(c.decode18, f) for f in R18], *[(c.decode288, f) for f in [*R288, READER_INFO]],
], ids=lambda x: x.hex() if isinstance(x, bytes) else "")
def test_every_prefix_is_incomplete(decode: Decode, frame: bytes) -> None:
    assert_prefixes_incomplete(c.Framer, decode, frame)


# ------------------------------------------------------------------ framer

STREAM = b"".join(R288)


def test_framer_splits_back_to_back_frames() -> None:
    framer = c.Framer()
    assert framer.feed(STREAM) == R288
    assert framer.pending == 0 and framer.discarded == 0


def test_framer_resyncs_after_garbage() -> None:
    garbage = H("00 01 02 03 05 00 01 03 01 06")  # small Len bytes, CRCs that fail
    framer = c.Framer()
    frames = framer.feed(garbage + R288_SGTIN + garbage[:4] + R288_NO_TAGS)
    assert frames == [R288_SGTIN, R288_NO_TAGS]
    assert framer.discarded == len(garbage) + 4
    assert framer.drain_garbage() == [garbage, garbage[:4]]


def test_flush_releases_a_frame_behind_a_long_false_len() -> None:
    # a polled reader goes quiet after its answer: 0xFE would wait for 255 bytes
    framer = c.Framer()
    assert framer.feed(b"\xfe" + R288_SGTIN) == []
    assert framer.flush() == [R288_SGTIN]
    assert (framer.discarded, framer.pending) == (1, 0)


def test_framer_buffer_is_bounded() -> None:
    framer = c.Framer()
    for _ in range(100):
        framer.feed(b"\xff" + bytes(range(1, 80)))
        assert framer.pending <= 256


@given(st.lists(st.integers(0, len(STREAM)), max_size=12), st.binary(max_size=40))
def test_framer_is_independent_of_split_points(cuts: list[int], garbage: bytes) -> None:
    data = garbage + STREAM + garbage
    whole = c.Framer()
    expected = whole.feed(data)
    byte_wise, chunked = c.Framer(), c.Framer()
    assert feed_all(byte_wise, [data[i : i + 1] for i in range(len(data))]) == expected
    assert feed_all(chunked, split(data, cuts)) == expected
    assert byte_wise.discarded == chunked.discarded == whole.discarded


# ------------------------------------------------------------------ round trips

epcs = st.binary(min_size=1, max_size=31).map(lambda b: b.hex().upper())
statuses = st.sampled_from([c.STATUS_DONE, c.STATUS_TIMEOUT, c.STATUS_MORE, c.STATUS_BUFFER_FULL])


@given(st.lists(st.tuples(st.lists(epcs, max_size=5), statuses, st.integers(0, 255)),
                min_size=1, max_size=4),
       st.lists(st.integers(0, 1000), max_size=8), st.binary(max_size=12))
def test_uhfreader18_round_trip(
    frames: list[tuple[list[str], int, int]], cuts: list[int], garbage: bytes,
) -> None:
    data = b"".join(garbage + c.encode_inventory_response18(e, s, a) for e, s, a in frames)
    framer = c.Framer()
    got = feed_all(framer, split(data + garbage, cuts)) + framer.flush()
    decoded = [rec for frame in got for rec in c.decode18(frame)]
    expected: list[TagRead | ReaderStatus] = []
    for e, s, _ in frames:
        expected += [_u(x) for x in e]
        expected.append(c.decode18(c.encode_inventory_response18([], s))[0])
    assert decoded == expected


@given(st.lists(st.tuples(epcs, st.integers(0, 255)), max_size=5), statuses,
       st.integers(0, 255), st.integers(1, 8))
def test_uhfreader288_round_trip(
    tags: list[tuple[str, int]], status: int, adr: int, antenna: int,
) -> None:
    reads = [_u(e, antenna, r) for e, r in tags]
    frame = c.encode_inventory_response288(reads, status, adr, antenna)
    assert c.Framer().feed(frame) == [frame]
    decoded = c.decode288(frame)
    assert decoded[:-1] == reads and isinstance(decoded[-1], ReaderStatus)


@given(epcs, st.integers(0, 255), st.integers(1, 8))
def test_autonomous_round_trip(epc: str, rssi: int, antenna: int) -> None:
    assert c.decode18(c.encode_autonomous18(epc)) == [_u(epc)]
    assert c.decode288(c.encode_autonomous288(_u(epc, antenna, rssi))) == [_u(epc, antenna, rssi)]


# ------------------------------------------------------------------ robustness


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_records_or_decode_error(data: bytes) -> None:
    for decode in (c.decode18, c.decode288):
        decode_stream(c.Framer(), decode, data)
        try:
            for rec in decode(data):
                check_record(rec)
        except DecodeError:
            pass


@given(st.sampled_from([0x01, 0xEE, 0x21, 0x0F]), st.integers(0, 255), st.binary(max_size=250))
def test_any_well_framed_payload_gives_records_or_decode_error(
    recmd: int, status: int, data: bytes,
) -> None:
    frame = c.encode_response(recmd, status, data)
    for decode in (c.decode18, c.decode288):
        try:
            for rec in decode(frame):
                check_record(rec)
        except DecodeError:
            pass


def test_registry_lines() -> None:
    assert PROTOCOLS["chafon18"] == (c.Framer, c.decode18)
    assert PROTOCOLS["chafon288"] == (c.Framer, c.decode288)
