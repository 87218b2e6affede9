"""OwnTracks JSON decoder: READERS.md 5.2, the OwnTracks booklet and Recorder docs."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError, FieldError
from devices.gps import owntracks
from devices.records import GpsFix
from tests.devices.invariants import check_fix

# READERS.md 5.2 "Example (real)".
READERS_EXAMPLE = (
    b'{"tst":1440403798,"acc":5,"_type":"location","alt":166,"lon":12.71026164294473,'
    b'"vac":6,"vel":35,"lat":51.26004282389884,"cog":118,"tid":"NE","batt":88}'
)
# traccar/traccar pull request #3242 (OwnTracks protocol, by jpmens): an HTTP payload.
TRACCAR_PR = (
    b'{"cog":271,"lon":2.29513,"acc":5,"vel":61,"vac":21,"lat":48.85833,"tst":1497350249,'
    b'"alt":167,"_type":"location","tid":"JJ"}'
)
# owntracks/booklet docs/features/traccar.md: the minimal HTTP payload.
BOOKLET_MINIMAL = b'{"lon":2.29513,"lat":48.85833,"_type":"location","tst":1497476456, "tid":"JJ"}'
# owntracks/recorder README, Lua hooks section: an iOS publish with -1 for unknowns.
RECORDER_IOS = (
    b'{"cog":-1,"batt":-1,"lon":2.29513,"acc":5,"vel":-1,"vac":-1,"lat":48.85833,"t":"u",'
    b'"tst":1441984413,"alt":0,"_type":"location","tid":"JJ"}'
)
LOCATIONS = [READERS_EXAMPLE, TRACCAR_PR, BOOKLET_MINIMAL, RECORDER_IOS]


def _decode_checked(payload: bytes) -> list[GpsFix]:
    fixes = owntracks.decode(payload)
    for fix in fixes:
        check_fix(fix)
    return fixes


def test_readers_example() -> None:
    [fix] = _decode_checked(READERS_EXAMPLE)
    assert fix.ts_us == 1_440_403_798_000_000
    assert (fix.lat_deg, fix.lon_deg) == (51.26004282389884, 12.71026164294473)
    assert fix.speed_mps == pytest.approx(35 / 3.6)  # vel is km/h
    assert (fix.heading_deg, fix.acc_m, fix.alt_m) == (118.0, 5.0, 166.0)


def test_traccar_pr_payload() -> None:
    [fix] = _decode_checked(TRACCAR_PR)
    assert fix.speed_mps == pytest.approx(61 / 3.6)
    assert (fix.heading_deg, fix.alt_m) == (271.0, 167.0)


def test_omitted_optionals_are_unknown_not_zero() -> None:
    [fix] = _decode_checked(BOOKLET_MINIMAL)
    assert fix.ts_us == 1_497_476_456_000_000
    for value in (fix.speed_mps, fix.heading_deg, fix.acc_m, fix.alt_m):
        assert math.isnan(value)


def test_ios_minus_one_is_unknown_and_explicit_zero_stays_zero() -> None:
    [fix] = _decode_checked(RECORDER_IOS)
    assert math.isnan(fix.speed_mps) and math.isnan(fix.heading_deg)
    assert (fix.acc_m, fix.alt_m) == (5.0, 0.0)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"_type":"lwt","tst":"1440403795"}',  # READERS.md 5.2: demo lwt has tst as a string
        # Constructed from the booklet's field lists:
        b'{"_type":"transition","wtst":1440403790,"lat":51.26,"lon":12.71,"tst":1440403798,'
        b'"acc":5,"tid":"NE","event":"enter","desc":"Home","t":"c"}',
        b'{"_type":"waypoint","desc":"Home","lat":51.26,"lon":12.71,"rad":50,"tst":1440403790}',
        b'{"_type":"card","name":"Jane"}',
        b'{"_type":"cmd","action":"reportLocation"}',
        b'{"_type":"status","android":{}}',
        b'{"_type":"steps","steps":10}',
    ],
)
def test_other_message_types_give_nothing(payload: bytes) -> None:
    assert owntracks.decode(payload) == []


def test_encrypted_payloads_are_refused_not_dropped() -> None:
    with pytest.raises(DecodeError, match="encrypted"):
        owntracks.decode(b'{"_type":"encrypted","data":"c2VjcmV0"}')


def test_null_island_gives_no_fix() -> None:
    assert owntracks.decode(b'{"_type":"location","lat":0,"lon":0,"tst":1440403798}') == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"lat":1,"lon":2,"tst":1440403798}', "_type"),
        (b'{"_type":"location","lon":2,"tst":1440403798}', "lat must be a number"),
        (b'{"_type":"location","lat":1,"tst":1440403798}', "lon must be a number"),
        (b'{"_type":"location","lat":1,"lon":2}', "tst must be integer"),
        (b'{"_type":"location","lat":1,"lon":2,"tst":"1440403798"}', "tst must be integer"),
        (b'{"_type":"location","lat":1,"lon":2,"tst":1440403798.5}', "tst must be integer"),
        (b'{"_type":"location","lat":true,"lon":2,"tst":1440403798}', "lat must be a number"),
        (b'{"_type":"location","lat":"51.2","lon":2,"tst":1440403798}', "lat must be a number"),
        (b'{"_type":"location","lat":NaN,"lon":2,"tst":1440403798}', "not finite"),
        (b'{"_type":"location","lat":1e999,"lon":2,"tst":1440403798}', "not finite"),
        (b'{"_type":"location","lat":91,"lon":2,"tst":1440403798}', "out of range"),
        (b'{"_type":"location","lat":1,"lon":2,"tst":0}', "outside 2000..2100"),
        (b'{"_type":"location","lat":1,"lon":2,"tst":1440403798,"vel":"fast"}', "vel"),
        (b'{"_type":"location","lat":1,"lon":2,"tst":1440403798,"cog":400}', "cog"),
        (
            b'{"_type":"location","lat":1,"lon":2,"tst":1440403798,"alt":' + b"9" * 400 + b"}",
            "not finite",
        ),
    ],
)
def test_malformed_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(FieldError, match=reason):
        owntracks.decode(payload)


@pytest.mark.parametrize("payload", LOCATIONS)
def test_every_prefix_raises_or_gives_nothing(payload: bytes) -> None:
    for n in range(len(payload)):
        with contextlib.suppress(DecodeError):
            assert owntracks.decode(payload[:n]) == []


@given(st.binary(max_size=200))
def test_any_bytes_give_a_list_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(owntracks.decode(data), list)


_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@given(
    st.dictionaries(
        st.sampled_from(["_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "x"]),
        _VALUES | st.just("location"),
        max_size=9,
    )
)
def test_any_json_object_gives_a_list_or_decode_error(doc: dict[str, object]) -> None:
    try:
        payload = json.dumps(doc).encode()
    except ValueError:
        return
    try:
        for fix in owntracks.decode(payload):
            assert -90.0 <= fix.lat_deg <= 90.0 and -180.0 <= fix.lon_deg <= 180.0
    except DecodeError:
        pass


@given(
    st.fixed_dictionaries(
        {
            "_type": st.just("location"),
            "lat": st.floats(-100, 100) | st.integers(-100, 100),
            "lon": st.floats(-200, 200) | st.integers(-200, 200),
            "tst": st.integers(0, 5_000_000_000),
        },
        optional={k: _VALUES for k in ("vel", "cog", "acc", "alt")},
    )
)
def test_any_location_gives_sane_fixes_or_decode_error(doc: dict[str, object]) -> None:
    try:
        fixes = owntracks.decode(json.dumps(doc).encode())
    except DecodeError:
        return
    for fix in fixes:
        assert -90.0 <= fix.lat_deg <= 90.0 and -180.0 <= fix.lon_deg <= 180.0
        assert math.isnan(fix.speed_mps) or fix.speed_mps >= 0.0
        assert math.isnan(fix.heading_deg) or 0.0 <= fix.heading_deg <= 360.0
