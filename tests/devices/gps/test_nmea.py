"""NMEA 0183 decoder: READERS.md 5.1 examples and the six gpsd captures in shared/data/nmea."""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import ChecksumError, DecodeError, FieldError, FrameError
from devices.gps import nmea
from devices.records import GpsFix
from tests.devices.invariants import check_fix

# The shared directory sits beside the repository root.
DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _captures() -> list[Path]:
    folder = DATA / "nmea"
    if not folder.is_dir():  # fail collection loudly rather than skip the capture tests
        pytest.fail(f"shared NMEA captures missing: no directory {folder.resolve()}", pytrace=False)
    return sorted(folder.glob("*.log"))


CAPTURES = _captures()


def _decode_checked(payload: bytes) -> list[GpsFix]:
    fixes = nmea.decode(payload)
    for fix in fixes:
        check_fix(fix)
    return fixes


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat(timespec="milliseconds")


def _with_checksum(body: str) -> bytes:
    """Constructed sentences only (marked as such where used): `$body*hh\\r\\n`."""
    return f"${body}*{reduce(lambda a, c: a ^ ord(c), body, 0):02X}\r\n".encode()


# READERS.md 5.1, "Verified examples [V]".
RMC_GN = b"$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B"
GGA_GN = b"$GNGGA,001043.00,4404.14036,N,12118.85961,W,1,12,0.98,1113.0,M,-21.3,M*47"
RMC_RTK = b"$GPRMC,132820.60,A,4134.49821229,N,09345.03351845,W,3.252,92.308,180320,11.5985,E,D*1A"
RMC_41 = b"$GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110720,,,D,V*0E"
RMC_EMPTY = b"$GPRMC,,V,,,,,,,,,,N*53"
VERIFIED = [RMC_GN, GGA_GN, RMC_RTK, RMC_41, RMC_EMPTY]


def test_data_dir_is_present() -> None:
    assert (DATA / "nmea").is_dir(), f"shared test data missing: {DATA.resolve()}"
    assert len(CAPTURES) == 6, f"expected 6 NMEA captures in {DATA / 'nmea'}, got {CAPTURES}"


def test_readers_rmc_gives_date_time_position_speed() -> None:
    [fix] = _decode_checked(RMC_GN)
    assert _iso(fix.ts_us) == "2017-01-10T00:10:31.000+00:00"
    assert fix.lat_deg == pytest.approx(44 + 4.13993 / 60, abs=1e-12)
    assert fix.lon_deg == pytest.approx(-(121 + 18.86023 / 60), abs=1e-12)
    assert fix.speed_mps == pytest.approx(0.146 * 0.514444, rel=1e-5)
    assert math.isnan(fix.heading_deg)  # empty course field
    assert (fix.sats, math.isnan(fix.alt_m), math.isnan(fix.hdop)) == (-1, True, True)


def test_readers_rtk_rmc_with_eight_decimal_minutes() -> None:
    [fix] = _decode_checked(RMC_RTK)
    assert fix.lat_deg == pytest.approx(41.574970205, abs=1e-9)
    assert fix.lon_deg == pytest.approx(-93.750558641, abs=1e-9)
    assert fix.ts_us == 1_584_538_100_600_000  # 2020-03-18T13:28:20.6Z
    assert fix.heading_deg == 92.308


def test_readers_nmea41_rmc_nav_status_v_is_not_a_veto() -> None:
    # Field 13 "V" is what u-blox sends when it gives no navigational status.
    [fix] = _decode_checked(RMC_41)
    assert _iso(fix.ts_us) == "2020-07-11T22:37:45.000+00:00"


def test_readers_lowercase_checksum_is_accepted() -> None:
    assert nmea.decode(RMC_RTK[:-2] + b"1a") == nmea.decode(RMC_RTK)


def test_gga_alone_gives_no_fix_because_it_has_no_date() -> None:
    assert nmea.decode(GGA_GN) == []


def test_empty_no_fix_rmc_gives_nothing() -> None:
    assert nmea.decode(RMC_EMPTY + b"\r\n") == []


@pytest.mark.parametrize("sentence", VERIFIED)
def test_every_prefix_of_a_sentence_gives_nothing_or_decode_error(sentence: bytes) -> None:
    for n in range(len(sentence)):
        with contextlib.suppress(DecodeError):
            assert nmea.decode(sentence[:n]) == []


def test_gga_of_the_same_epoch_adds_altitude_satellites_hdop() -> None:
    # nmea-rtk.log lines 10-11: GGA first, then the RMC of the same time.
    pair = (
        b"$GNGGA,132819.60,4134.49795459,N,09345.03431408,W,2,10,0.9,278.161,M,-31.442,M,6.6,0133*6A\r\n"
        b"$GNRMC,132819.60,A,4134.49795459,N,09345.03431408,W,0.148,124.888,180320,11.5985,E,D*3F\r\n"
    )
    [fix] = _decode_checked(pair)
    assert (fix.alt_m, fix.sats, fix.hdop) == (278.161, 10, 0.9)
    # Order within the epoch does not matter.
    first, second = pair.splitlines(keepends=True)
    assert nmea.decode(second + first) == [fix]


def test_gga_of_another_time_is_not_merged() -> None:
    # humminbird-M37.log: RMC 194103 then GGA 194104 (talker IN).
    payload = (
        b"$INRMC,194103,A,4426.1134,N,07140.5558,W,5.3,77.0,160906,15.8,W*66\r\n"
        b"$INGGA,194104,4426.1138,N,07140.5536,W,2,10,0.9,267.9,M,,,,*13\r\n"
    )
    [fix] = _decode_checked(payload)
    assert _iso(fix.ts_us) == "2006-09-16T19:41:03.000+00:00"
    assert fix.sats == -1 and math.isnan(fix.alt_m)


def test_rmc_status_v_gives_no_fix_even_with_a_good_gga() -> None:
    # garmin-geko201.log, first epoch: RMC V (demo mode) and GGA quality 8.
    payload = (
        b"$GPRMC,214350,V,4023.8600,N,00339.1630,W,10.8,0.0,140605,2.5,W,S*21\r\n"
        b"$GPGGA,214350,4023.8600,N,00339.1630,W,8,09,2.0,695.7,M,51.6,M,,*5A\r\n"
    )
    assert nmea.decode(payload) == []


def test_gga_quality_zero_vetoes_the_epoch() -> None:
    # Constructed from RMC_RTK: a GGA of the same time that says quality 0.
    gga = _with_checksum("GPGGA,132820.60,4134.49821229,N,09345.03351845,W,0,00,99.99,,,,,,")
    assert nmea.decode(RMC_RTK + b"\r\n" + gga) == []
    assert len(nmea.decode(RMC_RTK + b"\r\n" + gga.replace(b"132820.60", b"132821.60"))) <= 1


def test_faa_mode_n_gives_no_fix() -> None:
    # Constructed from RMC_GN with the FAA mode field set to N (not valid).
    body = RMC_GN[1:-3].decode().rsplit(",", 1)[0] + ",N"
    assert nmea.decode(_with_checksum(body)) == []


def test_null_island_gives_no_fix() -> None:
    # Constructed: a receiver that reports status A at 0/0.
    body = "GPRMC,120000.00,A,0000.0000,N,00000.0000,E,0.0,,010120,,,A"
    assert nmea.decode(_with_checksum(body)) == []


def test_only_non_position_sentences_give_an_empty_list() -> None:
    # bt451.log banner and quectel-eg25-g.log satellites in view.
    payload = (
        b"$GPTXT,01,01,02,u-blox ag - www.u-blox.com*50\r\n"
        b"$GLGSV,2,2,08,70,09,333,,69,56,281,,87,12,033,,81,11,130,,1*7D\r\n"
        b"$GPGSV,1,1,00*79\r\n"
    )
    assert nmea.decode(payload) == []


def test_only_bad_checksums_raise_checksum_error() -> None:
    # firefly-II.log: its GGA sentences carry a wrong checksum (gpsd drops them too).
    bad = b"$GPGGA,005947.00,3715.6616,N,12157.6709,W,,11,0.8,86.0,M,-30.1,M,,*54\r\n"
    with pytest.raises(ChecksumError, match="got 0x54, computed 0x56"):
        nmea.decode(bad)
    with pytest.raises(ChecksumError, match="no checksum"):
        nmea.decode(RMC_GN[:-3])


def test_a_bad_sentence_is_skipped_when_others_are_good() -> None:
    bad = b"$GPGGA,005947.00,3715.6616,N,12157.6709,W,,11,0.8,86.0,M,-30.1,M,,*54\r\n"
    assert nmea.decode(bad + RMC_GN) == nmea.decode(RMC_GN)


def test_no_sentence_at_all_raises_frame_error() -> None:
    for payload in (b"", b"hello world\r\n", bytes(range(256)).replace(b"$", b"")):
        with pytest.raises(FrameError):
            nmea.decode(payload)


def test_garbage_between_sentences_is_skipped() -> None:
    payload = CAPTURES[0].read_bytes()
    noisy = b"\x00\xff\xb5b\x01\x07$\x13" + payload.replace(b"\n$", b"\n\x00\x81garbage\r\n$")
    assert nmea.decode(noisy) == nmea.decode(payload)


def test_malformed_field_in_a_valid_sentence_raises_field_error() -> None:
    # Constructed: checksums are right, contents are not.
    cases = [
        "GPRMC,132820.60,A,41x4.49,N,09345.03,W,3.2,92.3,180320,,,D",  # latitude
        "GPRMC,132820.60,A,4134.49,Q,09345.03,W,3.2,92.3,180320,,,D",  # hemisphere
        "GPRMC,252820.60,A,4134.49,N,09345.03,W,3.2,92.3,180320,,,D",  # hour 25
        "GPRMC,132820.60,A,4134.49,N,09345.03,W,3.2,92.3,310220,,,D",  # 31 February
        "GPRMC,132820.60,A,4134.49,N,09345.03,W,nan,92.3,180320,,,D",  # speed
        "GPRMC,132820.60,A,4134.49,N,09345.03,W,3.2,400.0,180320,,,D",  # course
        "GPRMC,132820.60,A,9134.49,N,09345.03,W,3.2,92.3,180320,,,D",  # 91 degrees
        "GPRMC,132820.60,A,4134.49,N,09345.03,W,3.2,92.3,180398,,,D",  # 1998
        "GPRMC,132820.60,A,4134.49",  # too few fields
        "GPGGA,132820.60,4134.49,N,09345.03,W,x,10,0.9,278.1,M,,M,,",  # quality
    ]
    for body in cases:
        with pytest.raises(FieldError):
            nmea.decode(_with_checksum(body))


def test_negative_hdop_or_too_many_digits_raise_field_error() -> None:
    # python -m fuzz (nmea harness, shared fix invariant): constructed from READERS.md 5.1's
    # RMC and GGA, checksums made right. float() of 400 digits is inf, not an error.
    rmc = "GNRMC,001043.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A"
    gga = "GNGGA,001043.00,4404.14036,N,12118.85961,W,1,12,{hdop},{alt},M,-21.3,M"
    cases = [
        _with_checksum(rmc) + _with_checksum(gga.format(hdop="-0.98", alt="1113.0")),
        _with_checksum(rmc) + _with_checksum(gga.format(hdop="0.98", alt="1" * 400)),
        _with_checksum(rmc.replace("0.146", "1" * 400)),
    ]
    for payload in cases:
        with pytest.raises(FieldError):
            nmea.decode(payload)
    [fix] = _decode_checked(
        _with_checksum(rmc) + _with_checksum(gga.format(hdop="0.98", alt="-5.0"))
    )
    assert (fix.hdop, fix.alt_m) == (0.98, -5.0)  # a negative altitude is fine


# --- the gpsd captures --------------------------------------------------------------------


def _chk_expectations(chk: Path) -> tuple[set[str], dict[str, list[dict[str, float]]]]:
    """From a gpsd .chk file: the times of the RMC sentences gpsd accepted with status A
    and a date and position, and every TPV report (time -> reports)."""
    rmc_times: set[str] = set()
    tpv: dict[str, list[dict[str, float]]] = {}
    for line in chk.read_text().splitlines():
        if line.startswith("$") and line[3:6] == "RMC":
            f = line.split("*")[0].split(",")
            if f[2] == "A" and f[1] and f[3] and f[5] and f[9] and f[12:13] != ["N"]:
                t = f[1]
                day = datetime.strptime(f[9] + t[:6], "%d%m%y%H%M%S")
                frac = float("0" + t[6:]) if len(t) > 6 else 0.0
                rmc_times.add(
                    day.replace(tzinfo=UTC, microsecond=round(frac * 1e6)).isoformat(
                        timespec="milliseconds"
                    )
                )
        elif line.startswith("{"):
            report = json.loads(line)
            if report["class"] == "TPV" and "time" in report:
                t = report["time"].replace("Z", "+00:00")
                tpv.setdefault(t, []).append(report)
    return rmc_times, tpv


@pytest.mark.parametrize("log", CAPTURES, ids=[p.name for p in CAPTURES])
def test_capture_matches_gpsd_check_file(log: Path) -> None:
    """Per shared/data/README.md: decode the .log, compare with gpsd's TPV reports."""
    chk = log.with_name(log.name + ".chk")
    assert chk.is_file(), f"missing {chk}"
    fixes = _decode_checked(log.read_bytes())
    rmc_times, tpv = _chk_expectations(chk)
    # One fix per RMC epoch that gpsd accepted, and no other.
    assert {_iso(f.ts_us) for f in fixes} == rmc_times
    assert len(fixes) == len(rmc_times)
    # gpsd reports once per cycle it detects, not after every RMC: compare where it did.
    compared = 0
    for fix in fixes:
        reports = tpv.get(_iso(fix.ts_us), [])
        if not reports:
            continue
        compared += 1
        assert any(
            abs(r["lat"] - fix.lat_deg) < 1e-8 and abs(r["lon"] - fix.lon_deg) < 1e-8
            for r in reports
        ), (fix, reports)
        assert any(abs(r["speed"] - fix.speed_mps) <= 6e-4 for r in reports if "speed" in r)
        if not math.isnan(fix.heading_deg):
            assert any(abs(r["track"] - fix.heading_deg) < 1e-4 for r in reports if "track" in r)
        if not math.isnan(fix.alt_m):  # only when a GGA of the same time was merged
            assert any(abs(r["altMSL"] - fix.alt_m) < 1e-4 for r in reports if "altMSL" in r)
    assert compared >= len(fixes) // 2, f"only {compared} of {len(fixes)} fixes had a report"


def test_capture_fix_counts() -> None:
    """Pinned so a change in epoch handling shows up as a diff here."""
    counts = {p.name: len(nmea.decode(p.read_bytes())) for p in CAPTURES}
    assert counts == {
        "bt451.log": 13,
        "firefly-II.log": 23,
        "garmin-geko201.log": 0,  # demo mode: every RMC has status V
        "humminbird-M37.log": 12,
        "nmea-rtk.log": 122,
        "quectel-eg25-g.log": 23,
    }


@pytest.mark.parametrize("log", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_capture_line_alone_gives_fixes_or_decode_error(log: Path) -> None:
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(DecodeError):
            _decode_checked(line)


# --- arbitrary input ----------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_bytes_give_a_list_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(nmea.decode(data), list)


_FIELD = st.from_regex(re.compile(r"[0-9A-Za-z.\-]{0,12}"), fullmatch=True)


@given(
    st.sampled_from(["GPRMC", "GNGGA", "INRMC", "GPGGA", "GPGSV"]),
    st.lists(_FIELD, max_size=14),
)
def test_any_checksummed_sentence_gives_a_list_or_decode_error(
    address: str, fields: list[str]
) -> None:
    try:
        for fix in nmea.decode(_with_checksum(",".join([address, *fields]))):
            assert -90.0 <= fix.lat_deg <= 90.0 and -180.0 <= fix.lon_deg <= 180.0
    except DecodeError:
        pass
