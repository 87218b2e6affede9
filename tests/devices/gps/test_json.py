import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError
from devices.gps import json as gps_json
from devices.records import GpsFix


def test_one_object_with_rfc3339_time() -> None:
    [fix] = gps_json.decode(
        b'{"ts": "2026-11-24T08:15:02.250+01:00", "lat": 52.52, "lon": 13.405,'
        b' "speed": 8.5, "heading": 271, "acc": 4, "alt": 35.5, "sats": 9, "seq": 17}'
    )
    assert fix.ts_us == 1_795_504_502_250_000  # 2026-11-24T07:15:02.25Z
    assert (fix.lon_deg, fix.lat_deg) == (13.405, 52.52)
    assert (fix.speed_mps, fix.heading_deg, fix.acc_m, fix.alt_m) == (8.5, 271.0, 4.0, 35.5)
    assert (fix.sats, fix.seq) == (9, 17)


def test_array_with_unix_seconds_and_missing_optionals() -> None:
    fixes = gps_json.decode(b'[{"ts": 1795936502.5, "lat": 1, "lon": 2},'
                            b' {"ts": 1795936503, "lat": 1.5, "lon": 2.5}]')
    assert [f.ts_us for f in fixes] == [1_795_936_502_500_000, 1_795_936_503_000_000]
    assert math.isnan(fixes[0].speed_mps) and fixes[0].sats == -1 and fixes[0].seq == -1


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "not JSON"),
    (b'{"lat": 1, "lon": 2}', "missing 'ts'"),
    (b'{"ts": 1, "lon": 2}', "missing 'lat'"),
    (b'{"ts": "yesterday", "lat": 1, "lon": 2}', "RFC 3339"),
    (b'{"ts": "2026-11-24T08:00:00", "lat": 1, "lon": 2}', "no UTC offset"),
    (b'{"ts": 1, "lat": "52.5", "lon": 2}', "must be a number"),
    (b'{"ts": 1, "lat": true, "lon": 2}', "must be a number"),
    (b'{"ts": 1, "lat": 1, "lon": 2, "sats": 1.5}', "integer"),
    (b'{"ts": 1.8e302, "lat": 1, "lon": 2}', "between 1970 and 2100"),
    (b'{"ts": -5, "lat": 1, "lon": 2}', "between 1970 and 2100"),
    (b'[{"ts": 1, "lat": 1, "lon": 2}, 7]', "fix 1"),
    (b'"a string"', "JSON object"),
])
def test_malformed_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        gps_json.decode(payload)


def test_encode_is_the_inverse_of_decode() -> None:
    fixes = [GpsFix(1_795_936_502_250_000, 13.4, 52.5, 3.0, 90.0, 5.0, seq=1),
             GpsFix(1_795_936_503_000_000, 13.41, 52.51)]
    assert gps_json.decode(gps_json.encode(fixes)) == fixes
    assert gps_json.decode(gps_json.encode(fixes[:1])) == fixes[:1]


@given(st.binary(max_size=200))
def test_any_bytes_give_fixes_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        gps_json.decode(data)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["ts", "lat", "lon", "speed", "sats", "x"]), c,
                        max_size=5), max_leaves=12))
def test_any_json_gives_fixes_or_decode_error(doc: object) -> None:
    import orjson
    try:
        payload = orjson.dumps(doc)
    except TypeError:
        return
    with contextlib.suppress(DecodeError):
        gps_json.decode(payload)
