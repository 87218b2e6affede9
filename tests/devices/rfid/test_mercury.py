"""ThingMagic Mercury: CRC, worked frames from READERS.md 1a, framer, decoder, encoders."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.records import ReaderStatus, TagRead
from devices.rfid import PROTOCOLS
from devices.rfid import mercury as m
from tests.devices.rfid import (
    assert_prefixes_incomplete,
    check_record,
    decode_stream,
    feed_all,
    split,
)

H = bytes.fromhex

# --- worked frames, READERS.md section 1a (sources: tosog/mercury, SparkFun library) ---
# host -> module commands
GET_VERSION = H("FF 00 03 1D 0C")  # "Get Version. CRC over 00 03 = 0x1D0C"
STOP = H("FF 03 2F 00 00 02 5E 86")  # "Stop continuous reading"
START = H("FF 10 2F 00 00 01 22 00 00 05 07 22 10 00 1B 03 E8 01 FF DD 2B")  # SparkFun startReading
WRITE_TAG_DATA = H("FF 0A 24 03 E8 00 00 00 00 00 03 00 EE 58 9D")  # quoted in SparkFun
GET_TAG_BUFFER_FF = H("FF 03 29 00 FF 00 0B 22")  # batch inventory step 2, flags 0x00FF
# module -> host
KEEPALIVE = H("FF 00 22 04 00 84 E0")  # "Keep-alive ... about once a second"
TAG_RECORD = H(  # "Worked tag-record example (SparkFun source comment; CRC 0x561D)"
    "FF 28 22 00 00 10 00 1B 01 FF 01 01 C4 11 0E 16 40 00 00 01 27 00 00 05 00 00 0F 00 80 30"
    " 00 00 00 00 00 00 00 00 00 00 00 15 45 E9 4A 56 1D"
)
TAG_RECORD_READ = TagRead(
    "000000000000000000001545", antenna=1, rssi=-60.0, rssi_dbm=True, read_count=1,
    offset_ms=295, frequency_khz=923200, phase_deg=0,
)
WORKED_COMMANDS = [GET_VERSION, STOP, START, WRITE_TAG_DATA, GET_TAG_BUFFER_FF]

# module -> host frames built by this module's encoders (not captures), for coverage
EPC = "3074257BF7194E4000001A85"
ENCODED = [
    m.encode_read_tag_multiple_response(3),
    m.encode_read_tag_multiple_response(70_000, search_flags=m.SEARCH_CONTINUOUS),
    m.encode_tag_buffer_response([TagRead(EPC, 2, -51.0, True, 4)], 0x0007),
    m.encode_stream_frame(m.RESPONSE_CYCLE_END),
    m.encode_stop_response(),
    m.encode_frame(m.OP_CLEAR_TAG_BUFFER),
    m.encode_frame(m.OP_READ_TAG_MULTIPLE, b"", 0x0504),
]
RESPONSES = [KEEPALIVE, TAG_RECORD, *ENCODED]


def _crc_reference(data: bytes, init: int) -> int:
    """Plain MSB-first CRC, poly 0x1021, no reflection, no final XOR."""
    crc = init
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# ------------------------------------------------------------------ CRC


def test_crc_check_value() -> None:
    assert m.crc16(b"123456789") == 0xA69D
    assert _crc_reference(b"123456789", 0xFFFF) == 0x29B1  # CCITT-FALSE differs


@given(st.binary(min_size=2, max_size=64))
def test_crc_equals_init_1d0f_formulation(data: bytes) -> None:
    # READERS.md: tm_crc(M) = CRC16(0x1021, init 0x1D0F)(M[:-2]) XOR big-endian(M[-2:])
    assert m.crc16(data) == _crc_reference(data[:-2], 0x1D0F) ^ int.from_bytes(data[-2:])


def test_worked_frames_crc_is_big_endian() -> None:
    assert m.crc16(TAG_RECORD[1:-2]) == 0x561D and TAG_RECORD[-2:] == H("56 1D")
    assert m.crc16(GET_VERSION[1:-2]) == 0x1D0C


def test_gen2_tag_crc_of_worked_record() -> None:
    assert m.gen2_crc16(H("3000 000000000000000000001545")) == 0xE94A


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize("frame", WORKED_COMMANDS, ids=lambda f: f.hex())
def test_worked_commands_verify_and_frame(frame: bytes) -> None:
    opcode, data = m.decode_command(frame)
    assert opcode == frame[2] and len(data) == frame[1]
    framer = m.Framer(commands=True)
    assert framer.feed(b"\x00\xff" + frame) == [frame]
    assert framer.discarded == 2


def test_command_builders_match_worked_frames() -> None:
    assert m.cmd_stop_continuous() == STOP
    assert m.cmd_start_continuous() == START
    assert m.cmd_get_tag_buffer(0x00FF) == GET_TAG_BUFFER_FF
    assert m.decode_command(m.cmd_clear_tag_buffer()) == (0x2A, b"")
    assert m.decode_command(m.cmd_read_tag_multiple(1000, 0x01FF)) == (
        0x22, H("10 0003 03E8 01FF"))


def test_command_builders_refuse_out_of_range() -> None:
    with pytest.raises(ValueError):
        m.cmd_read_tag_multiple(70_000)
    with pytest.raises(ValueError):
        m.cmd_get_tag_buffer(-1)


# ------------------------------------------------------------------ decoding


def test_worked_tag_record() -> None:
    assert m.decode(TAG_RECORD) == [TAG_RECORD_READ]


def test_encoder_reproduces_worked_tag_record() -> None:
    assert m.encode_tag_record_frame(TAG_RECORD_READ, 0x01FF, gpio=0x0F) == TAG_RECORD


def test_keepalive() -> None:
    assert m.decode(KEEPALIVE) == [ReaderStatus("keepalive", 0x0400, "keep-alive (no tags found)")]
    assert m.encode_keepalive() == KEEPALIVE


@pytest.mark.parametrize("status", [0x0503, 0x0504, 0x0505, 0x0601, 0x7F00, 0x0101])
def test_error_statuses_are_health(status: int) -> None:
    [rec] = m.decode(m.encode_frame(m.OP_READ_TAG_MULTIPLE, b"", status))
    assert isinstance(rec, ReaderStatus)
    assert (rec.kind, rec.code) == ("health", status)
    assert m.STATUS_NAMES[status] in rec.detail


def test_firmware_assert_keeps_its_data() -> None:
    [rec] = m.decode(m.encode_frame(0x03, H("0000002A") + b"x.c", 0x7F01))
    assert isinstance(rec, ReaderStatus) and rec.kind == "health" and "0000002A" in rec.detail


def test_no_tags_in_buffer_is_a_quiet_response() -> None:
    [rec] = m.decode(m.encode_frame(m.OP_GET_TAG_BUFFER, b"", 0x0600))
    assert isinstance(rec, ReaderStatus) and (rec.kind, rec.code) == ("response", 0x0600)


@pytest.mark.parametrize(("data", "count"), [
    (H("10 0003 07"), 7),            # LEN 4: u8 at [8]
    (H("10 0003 00 09"), 9),         # LEN 5: u8 at [9]
    (H("10 0013 00011170"), 70_000),  # LEN 7: u32 at [8]
    (H("10 0013 00 00000102"), 258),  # LEN 8: u32 at [9]
])
def test_read_tag_multiple_count_by_len(data: bytes, count: int) -> None:
    [rec] = m.decode(m.encode_frame(m.OP_READ_TAG_MULTIPLE, data))
    assert isinstance(rec, ReaderStatus) and (rec.kind, rec.count) == ("response", count)


@given(st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_read_tag_multiple_response_round_trip(small: int, large: int) -> None:
    assert m.decode(m.encode_read_tag_multiple_response(small))[0] == ReaderStatus(
        "response", 0x22, f"{small} tags found", small)
    frame = m.encode_read_tag_multiple_response(large, search_flags=m.SEARCH_CONTINUOUS)
    assert frame[1] == 7
    assert m.decode(frame) == [ReaderStatus("response", 0x22, f"{large} tags found", large)]


def test_stream_cycle_end_status_report_and_stop() -> None:
    assert m.decode(m.encode_stream_frame(m.RESPONSE_CYCLE_END)) == [
        ReaderStatus("cycle_end", 0x22, "end of search cycle")]
    [report] = m.decode(m.encode_stream_frame(m.RESPONSE_STATUS, H("0102")))
    assert isinstance(report, ReaderStatus) and report.kind == "response"
    assert m.decode(m.encode_stop_response()) == [
        ReaderStatus("cycle_end", 0x2F, "continuous reading stopped")]
    with pytest.raises(FieldError):
        m.decode(m.encode_stream_frame(0x07))


def test_clear_buffer_and_boot() -> None:
    assert m.decode(m.encode_frame(m.OP_CLEAR_TAG_BUFFER)) == [
        ReaderStatus("response", 0x2A, "cleared")]
    assert m.decode(m.encode_frame(m.OP_BOOT, H("0102"))) == [ReaderStatus("boot", 4, "0102")]


def test_record_without_metadata_option() -> None:
    # option byte without 0x10: response type at [8], record at [9], no metadata fields
    tag = H("3000") + H(EPC)
    record = ((len(tag) + 2) * 8).to_bytes(2) + tag + m.gen2_crc16(tag).to_bytes(2)
    frame = m.encode_frame(m.OP_READ_TAG_MULTIPLE, H("00 0000 01") + record)
    assert m.decode(frame) == [TagRead(EPC)]


def test_get_tag_buffer_several_records() -> None:
    reads = [TagRead(EPC, 1, -40.0, True, 3), TagRead("E2801160600002", 2, -70.0, True, 1)]
    frame = m.encode_tag_buffer_response(reads, m.META_READCOUNT | m.META_RSSI | m.META_ANTENNA)
    assert m.decode(frame) == reads


@pytest.mark.parametrize(("pc", "xpc"), [(0x3200, H("0001")), (0x3200, H("8001 0203"))])
def test_xpc_words_are_skipped(pc: int, xpc: bytes) -> None:
    read = TagRead(EPC, 1, -60.0, True)
    frame = m.encode_tag_record_frame(read, m.META_RSSI | m.META_ANTENNA, pc=pc, xpc=xpc)
    assert m.decode(frame) == [read]
    with pytest.raises(ValueError):
        m.encode_tag_record_frame(read, m.META_RSSI, pc=pc, xpc=b"")


def test_embedded_data_is_skipped() -> None:
    # DATA metadata with 12 bits of tag-op data (2 bytes) before the EPC
    tag = H("3000") + H(EPC)
    record = H("000C ABC0") + ((len(tag) + 2) * 8).to_bytes(2) + tag + H("0000")
    frame = m.encode_stream_frame(m.RESPONSE_TAG, record, m.META_DATA)
    assert m.decode(frame) == [TagRead(EPC)]


def test_malformed_frames() -> None:
    with pytest.raises(ChecksumError):
        m.decode(TAG_RECORD[:-1] + b"\x00")
    with pytest.raises(FrameError):
        m.decode(TAG_RECORD + b"\x00")
    with pytest.raises(FrameError):
        m.decode(b"\x00" + TAG_RECORD[1:])
    with pytest.raises(FieldError):  # unknown metadata flag 0x4000
        m.decode(m.encode_stream_frame(m.RESPONSE_TAG, bytes(20), 0x4000))
    with pytest.raises(FieldError):  # trailing byte after the record
        m.decode(m.encode_frame(0x22, TAG_RECORD[5:-2] + b"\x00"))
    with pytest.raises(FieldError):  # EPC_LEN leaves no EPC
        m.decode(m.encode_stream_frame(m.RESPONSE_TAG, H("0020 3000 0000"), 0))
    with pytest.raises(FieldError):  # EPC_LEN not whole bytes
        m.decode(m.encode_stream_frame(m.RESPONSE_TAG, H("0061 3000") + bytes(12), 0))
    with pytest.raises(FieldError):  # tag count says 2, one record follows
        m.decode(m.encode_frame(0x29, H("0000 00 02") + TAG_RECORD[11 + 16 : -2]))


@pytest.mark.parametrize("frame", RESPONSES, ids=lambda f: f.hex())
def test_every_prefix_is_incomplete(frame: bytes) -> None:
    assert_prefixes_incomplete(m.Framer, m.decode, frame)


@pytest.mark.parametrize("frame", RESPONSES, ids=lambda f: f.hex())
def test_response_records_pass_invariants(frame: bytes) -> None:
    for rec in m.decode(frame):
        check_record(rec)


# ------------------------------------------------------------------ framer

STREAM = b"".join(RESPONSES)


def test_framer_splits_back_to_back_frames() -> None:
    framer = m.Framer()
    assert framer.feed(STREAM) == RESPONSES
    assert framer.pending == 0 and framer.discarded == 0


def test_framer_resyncs_after_garbage() -> None:
    # plausible-looking headers (0xFF, small LEN, known opcode) whose CRC fails
    garbage = H("00 13 FF FF 02 22 00 00 AA BB CC 11 FF 01 2F")
    framer = m.Framer()
    frames = framer.feed(garbage + KEEPALIVE + garbage + TAG_RECORD + garbage)
    frames += framer.flush()
    assert frames == [KEEPALIVE, TAG_RECORD]
    assert framer.discarded == 3 * len(garbage)
    assert b"".join(framer.drain_garbage()) == garbage * 3
    assert framer.drain_garbage() == [] and framer.pending == 0


def test_flush_releases_a_frame_behind_a_long_false_header() -> None:
    framer = m.Framer()
    assert framer.feed(H("FF F0 22") + KEEPALIVE) == []  # waits for a 247-byte frame
    assert framer.flush() == [KEEPALIVE]
    assert framer.discarded == 3


def test_opcodes_and_len_filter_candidates() -> None:
    framer = m.Framer(opcodes={0x22})
    assert framer.feed(m.encode_stop_response() + KEEPALIVE) == [KEEPALIVE]
    assert m.Framer().feed(H("FF F9") + KEEPALIVE) == [KEEPALIVE]  # LEN > 0xF8


def test_framer_buffer_is_bounded() -> None:
    framer = m.Framer()
    for _ in range(50):
        framer.feed(H("FF F8 22") + bytes(100))
        assert framer.pending <= 0xF8 + 7
    framer.flush()
    assert framer.pending == 0


@given(st.lists(st.integers(0, len(STREAM)), max_size=12), st.binary(max_size=40))
def test_framer_is_independent_of_split_points(cuts: list[int], garbage: bytes) -> None:
    data = garbage + STREAM + garbage
    whole = m.Framer()
    expected = whole.feed(data)
    byte_wise, chunked = m.Framer(), m.Framer()
    assert feed_all(byte_wise, [data[i : i + 1] for i in range(len(data))]) == expected
    assert feed_all(chunked, split(data, cuts)) == expected
    assert byte_wise.discarded == chunked.discarded == whole.discarded
    assert set(RESPONSES) <= set(expected + whole.flush())


# ------------------------------------------------------------------ round trips


def reads(flags: int) -> st.SearchStrategy[TagRead]:
    """TagReads carrying exactly the fields that ``flags`` put on the wire."""

    def field(flag: int, values: st.SearchStrategy[int], absent: int) -> st.SearchStrategy[int]:
        return values if flags & flag else st.just(absent)

    has_rssi = bool(flags & m.META_RSSI)
    return st.builds(
        TagRead,
        epc_hex=st.binary(min_size=1, max_size=16).map(lambda b: (b + b).hex().upper()),
        antenna=field(m.META_ANTENNA, st.integers(0, 15), -1),
        rssi=st.integers(-128, 127).map(float) if has_rssi else st.just(math.nan),
        rssi_dbm=st.just(has_rssi),
        read_count=field(m.META_READCOUNT, st.integers(0, 255), 1),
        offset_ms=field(m.META_TIMESTAMP, st.integers(0, 2**32 - 1), -1),
        frequency_khz=field(m.META_FREQUENCY, st.integers(0, 2**24 - 1), -1),
        phase_deg=field(m.META_PHASE, st.integers(0, 65535), -1),
    )


reads_and_flags = st.integers(0, m.META_ALL).flatmap(
    lambda flags: st.tuples(reads(flags), st.just(flags)))


@given(st.lists(reads_and_flags, min_size=1, max_size=5),
       st.lists(st.integers(0, 2000), max_size=8), st.binary(max_size=16))
def test_encode_frame_decode_round_trip(
    items: list[tuple[TagRead, int]], cuts: list[int], garbage: bytes,
) -> None:
    data = b"".join(garbage + m.encode_tag_record_frame(r, f) for r, f in items) + garbage
    framer = m.Framer()
    frames = feed_all(framer, split(data, cuts)) + framer.flush()
    assert [rec for frame in frames for rec in m.decode(frame)] == [r for r, _ in items]
    assert framer.discarded == len(garbage) * (len(items) + 1)


@given(st.integers(0, m.META_ALL).flatmap(
    lambda flags: st.tuples(st.lists(reads(flags), max_size=3), st.just(flags))))
def test_tag_buffer_round_trip(item: tuple[list[TagRead], int]) -> None:
    batch, flags = item
    assert m.decode(m.encode_tag_buffer_response(batch, flags)) == batch


# ------------------------------------------------------------------ robustness


@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_records_or_decode_error(data: bytes) -> None:
    decode_stream(m.Framer(), m.decode, data)
    try:
        for rec in m.decode(data):
            check_record(rec)
    except DecodeError:
        pass


@given(st.sampled_from(sorted(m.KNOWN_OPCODES)), st.binary(max_size=m.MAX_LEN),
       st.sampled_from([0, 0x0400, 0x0504, 0x7F01]))
def test_any_well_framed_payload_gives_records_or_decode_error(
    opcode: int, data: bytes, status: int,
) -> None:
    frame = m.encode_frame(opcode, data, status)
    assert m.Framer().feed(frame) == [frame]
    try:
        for rec in m.decode(frame):
            check_record(rec)
    except DecodeError:
        pass


def test_registry_line() -> None:
    assert PROTOCOLS["mercury"] == (m.Framer, m.decode)
