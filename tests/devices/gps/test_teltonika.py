"""Teltonika Codec 8 / 8E decoder: READERS.md 5.4 and real frames from Traccar's tests.

Frames marked "traccar" are from traccar/traccar
src/test/java/org/traccar/protocol/TeltonikaProtocolDecoderTest.java (commit 014cf82a),
the TCP (non-"extended") decoder's test frames. Expected values were decoded by hand
from the hex layout in READERS.md 5.4, not by running this decoder.
"""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.gps import teltonika
from devices.records import GpsFix
from tests.devices.invariants import check_fix

# READERS.md 5.4 worked example [V]: one record at 0/0 with 0 satellites, five IOs.
READERS_EXAMPLE = (
    "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101"
    "425E0F01F10000601A014E0000000000000000010000C7CF"
)
# traccar: codec 8, one record in Vienna.
C8_VIENNA = (
    "000000000000004c08010000016818d500580009c28d9f1cb3757a00be00c60f0053000f06f0011503c800"
    "01011d00fc0007423799180053cdf80dce426f430f88190bb8560bb802f100005aa110002887e000010000ee8d"
)
# traccar: codec 8, three records, newest first.
C8_THREE = (
    "00000000000000da08030000017fcedf499600280431be0eded45d0038012d100000fa100901000200b300b4"
    "004501500415034702fa00054232a1180000cd3b2fce281d43001f02c700000006f10000a029000000017fce"
    "dea99600280432070eded3dd00380046130009000f0801010200b300b400450150051502470205423276180009"
    "cd3b2fce281d43001f02c700000027f10000a0290000000179d50853180027f65d3f0ed67212001500f111006"
    "1000f0801010200b300b4004501500515034702054234f4180061cd53d1ce28c043003e02c700000147f10000"
    "00290003000052cb"
)
# traccar: codec 8E, one record, with an NX (variable length) group holding a VIN.
C8E_NX = (
    "00000000000000a38e0100000178b11c9e1000040bbbc91f03190c002100e113001300000010000600ef0100f0"
    "0100150300c800004501001e070005004237e00018000a00ce166200430f970024059f000300f10000665900c7"
    "0000001e00100000a1b500000002010000115756315a5a5a32455a38363031353338380119002950303239392c"
    "50303637352c50303637342c50303637322c50303637312c50303437312c50324241430100001ad8"
)
# traccar: codec 8E, two records, NX group with one 0x17-byte value.
C8E_TWO = (
    "00000000000000858e0200000174431aadc100061d888f21000e8a0032002e0c00000181000100000000000000"
    "0000010181001711210102030405060708090a0b0c0d0e0f10020b010ad000000174431a389100061d888f2100"
    "0e8a0033002e0d000001810001000000000000000000010181001711210102030405060708090a0b0c0d0e0f10"
    "020b010ad2020000492b"
)
# traccar: codec 8E, two records, both with 0 satellites (Cape Town, no fix).
C8E_NO_SATS = (
    "00000000000000b98e0200000179555c7bf8010b3a1cfbebc142b00000000000000000ec000f000900f0000015"
    "0000c80000450200710100740001070100fa0000ec01000500b500000018000000430d560044000000190000000"
    "100f1000000000000000000000179555c83c8010b3a1cfbebc142b0000000000000000185000f000900f000001"
    "50000c80000450200710100740001070100fa00018511000500b500000018000000430d56004400000019000000"
    "0100f100000000000000000200003251"
)
# traccar: codec 8, one record, many IOs.
C8_MANY_IO = (
    "000000000000004a08010000015ebc1da508002411926621f15246010b00b913005e000f06ef01f00150011505"
    "c800450108b5000bb6000642381b18005ecd0318ce19cd430f5844000001f1000061a900010000c8e1"
)
VALID = [READERS_EXAMPLE, C8_VIENNA, C8_THREE, C8E_NX, C8E_TWO, C8E_NO_SATS, C8_MANY_IO]

# traccar frames that a strict decoder must refuse (Traccar itself is lenient).
BROKEN = {
    "crc": "000000000000008c08010000013feb55ff74000f0ea850209a690000940000120000001e09FD01FE2103"
    "00040016014703f0001504c8000c0900730a00460b00501300464306d7440000b5000bb60007422e9f180000cd"
    "0386ce000107c700000000f10000601a46000001344800000bb84900000bb84a00000bb84c00000000024e0000"
    "000000000000cf00000000000000000100003fca",
    "length 0": "0000000000000000080100000113fc208dff00209cca800f14f650006f00d60400040004030101"
    "150316030001460000015d000100000000",
    "length too long": "00000000000000a608010000013f14a1d1ce000f0eb790209a778000ab010c050000000000"
    "0000000100003390",
    "length too short": (
        "00000000000000A7080400000113fc208dff000f14f650209cca80006f00d604000400040301011503160300"
        "01460000015d0000000113fc17610b000f14ffe0209cc580006e00c005000100040301011503160100014600"
        "00015e0000000113fc284945000f150f00209cd200009501080400000004030101150016030001460000015d"
        "0000000113fc267c5b000f150a50209cccc0009300680400000004030101150016030001460000015b000400"
        "00"
    ),
    "codec 12": "00000000000000100C010600000008010300010015D5C5010000D988",
}


def _decode_checked(hex_frame: str) -> list[GpsFix]:
    fixes = teltonika.decode(bytes.fromhex(hex_frame))
    for fix in fixes:
        check_fix(fix)
    return fixes


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()


def _packet(data: bytes, crc: int | None = None) -> bytes:
    """Wrap a data field (codec .. N2) in preamble, length and CRC."""
    crc = teltonika.crc16_arc(data) if crc is None else crc
    return struct.pack(">II", 0, len(data)) + data + struct.pack(">I", crc)


def test_crc16_arc_check_value() -> None:
    assert teltonika.crc16_arc(b"123456789") == 0xBB3D


def test_readers_example_has_no_valid_position() -> None:
    # 2019-06-10 10:04:46 UTC, position 0/0, 0 satellites: the record is skipped.
    assert _decode_checked(READERS_EXAMPLE) == []


def test_readers_example_with_a_wrong_crc_says_both_values() -> None:
    frame = bytearray.fromhex(READERS_EXAMPLE)
    frame[-1] ^= 0x01
    with pytest.raises(ChecksumError, match="got 0xC7CE, computed 0xC7CF"):
        teltonika.decode(bytes(frame))


def test_codec8_vienna_record() -> None:
    # ts 0x0000016818d50058 ms, lon 0x09c28d9f, lat 0x1cb3757a, alt 0x00be, angle 0x00c6,
    # 0x0f satellites, speed 0x0053 km/h.
    [fix] = _decode_checked(C8_VIENNA)
    assert _iso(fix.ts_us) == "2019-01-04T12:27:19+00:00"
    assert (fix.lat_deg, fix.lon_deg) == (48.1523066, 16.3745183)
    assert (fix.alt_m, fix.heading_deg, fix.sats) == (190.0, 198.0, 15)
    assert fix.speed_mps == pytest.approx(83 / 3.6)


def test_codec8_three_records_in_the_order_sent() -> None:
    fixes = _decode_checked(C8_THREE)
    assert [_iso(f.ts_us) for f in fixes] == [
        "2022-03-28T04:53:34.230000+00:00",
        "2022-03-28T04:52:53.270000+00:00",
        "2021-06-04T03:19:23.160000+00:00",
    ]
    assert [f.sats for f in fixes] == [16, 19, 17]
    assert fixes[2].speed_mps == pytest.approx(97 / 3.6)


def test_codec8e_with_variable_length_io_group() -> None:
    [fix] = _decode_checked(C8E_NX)
    assert _iso(fix.ts_us) == "2021-04-08T10:52:26+00:00"
    assert (fix.lat_deg, fix.lon_deg) == (52.0296716, 6.7877833)
    assert (fix.alt_m, fix.heading_deg, fix.sats) == (33.0, 225.0, 19)
    assert fix.speed_mps == pytest.approx(19 / 3.6)


def test_codec8e_two_records() -> None:
    fixes = _decode_checked(C8E_TWO)
    assert [(f.lat_deg, f.lon_deg, f.sats) for f in fixes] == [
        (55.365185, 10.2598799, 12),
        (55.365185, 10.2598799, 13),
    ]


def test_records_without_satellites_are_skipped() -> None:
    assert _decode_checked(C8E_NO_SATS) == []


@pytest.mark.parametrize("frame", VALID)
def test_every_prefix_raises_or_gives_nothing(frame: str) -> None:
    data = bytes.fromhex(frame)
    for n in range(len(data)):
        with contextlib.suppress(DecodeError):
            assert teltonika.decode(data[:n]) == []


@pytest.mark.parametrize("frame", VALID)
def test_trailing_bytes_are_a_frame_error(frame: str) -> None:
    with pytest.raises(FrameError):
        teltonika.decode(bytes.fromhex(frame) + b"\x00")


@pytest.mark.parametrize("name", BROKEN)
def test_broken_traccar_frames_are_refused(name: str) -> None:
    with pytest.raises(DecodeError):
        teltonika.decode(bytes.fromhex(BROKEN[name]))


def test_record_counts_must_agree() -> None:
    data = bytearray(bytes.fromhex(C8_VIENNA)[8:-4])
    data[-1] = 2  # N2, with the CRC recomputed
    with pytest.raises(FrameError, match="N1=1, N2=2"):
        teltonika.decode(_packet(bytes(data)))


def test_preamble_must_be_zero() -> None:
    frame = bytearray.fromhex(C8_VIENNA)
    frame[0] = 1
    with pytest.raises(FrameError, match="preamble"):
        teltonika.decode(bytes(frame))


def test_io_element_running_past_the_end_is_a_frame_error() -> None:
    data = bytearray(bytes.fromhex(C8_VIENNA)[8:-4])
    data[28] = 0x7F  # N1 of the 1-byte IOs (after event id and total): far too many
    with pytest.raises(FrameError):
        teltonika.decode(_packet(bytes(data)))


def test_implausible_record_time_is_a_field_error() -> None:
    data = bytearray(bytes.fromhex(C8_VIENNA)[8:-4])
    data[2:10] = (1000).to_bytes(8, "big")  # 1970
    with pytest.raises(FieldError, match=r"outside 2000\.\.2100"):
        teltonika.decode(_packet(bytes(data)))


# --- login packet -------------------------------------------------------------------------


def test_imei_login_packets() -> None:
    # READERS.md 5.4 and traccar's test.
    assert teltonika.decode_imei(bytes.fromhex("000F333536333037303432343431303133")) == (
        "356307042441013"
    )
    assert teltonika.decode_imei(bytes.fromhex("000F313233343536373839303132333435")) == (
        "123456789012345"
    )


@pytest.mark.parametrize(
    "packet",
    ["", "00", "000F3335", "000F33353633303730343234343130313300", "0000", "0002333A"],
)
def test_bad_imei_packets(packet: str) -> None:
    with pytest.raises(DecodeError):
        teltonika.decode_imei(bytes.fromhex(packet))


def test_every_imei_prefix_raises() -> None:
    data = bytes.fromhex("000F333536333037303432343431303133")
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            teltonika.decode_imei(data[:n])


# --- arbitrary input ----------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_bytes_give_a_list_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(teltonika.decode(data), list)


@given(st.sampled_from([0x08, 0x8E]), st.integers(0, 3), st.binary(max_size=200))
def test_any_framed_records_give_a_list_or_decode_error(codec: int, n: int, body: bytes) -> None:
    # Valid preamble, length and CRC around arbitrary records: exercises the record parser.
    try:
        for fix in teltonika.decode(_packet(bytes([codec, n]) + body + bytes([n]))):
            assert -90.0 <= fix.lat_deg <= 90.0 and -180.0 <= fix.lon_deg <= 180.0
    except DecodeError:
        pass


@given(st.binary(max_size=40))
def test_any_bytes_give_an_imei_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert teltonika.decode_imei(data).isdigit()
