import contextlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError
from devices.gps import json as gps_json
from devices.records import GPS_FIX_DTYPE, GpsFix


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
    fixes = gps_json.decode(
        b'[{"ts": 1795936502.5, "lat": 1, "lon": 2}, {"ts": 1795936503, "lat": 1.5, "lon": 2.5}]'
    )
    assert [f.ts_us for f in fixes] == [1_795_936_502_500_000, 1_795_936_503_000_000]
    assert math.isnan(fixes[0].speed_mps) and fixes[0].sats == -1 and fixes[0].seq == -1


@pytest.mark.parametrize(
    "payload, reason",
    [
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
    ],
)
def test_malformed_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        gps_json.decode(payload)


def test_encode_is_the_inverse_of_decode() -> None:
    fixes = [
        GpsFix(1_795_936_502_250_000, 13.4, 52.5, 3.0, 90.0, 5.0, seq=1),
        GpsFix(1_795_936_503_000_000, 13.41, 52.51),
    ]
    assert gps_json.decode(gps_json.encode(fixes)) == fixes
    assert gps_json.decode(gps_json.encode(fixes[:1])) == fixes[:1]


@given(st.binary(max_size=200))
def test_any_bytes_give_fixes_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        gps_json.decode(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(
                st.sampled_from(["ts", "lat", "lon", "speed", "sats", "x"]), c, max_size=5
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_gives_fixes_or_decode_error(doc: object) -> None:
    import orjson

    try:
        payload = orjson.dumps(doc)
    except TypeError:
        return
    with contextlib.suppress(DecodeError):
        gps_json.decode(payload)


def test_out_of_range_integers_say_why() -> None:
    for payload, reason in [(b'{"ts": 1, "lat": 1, "lon": 2, "sats": 70000}', "'sats' 70000"),
                            (b'{"ts": 1, "lat": 1, "lon": 2, "seq": 18446744073709551615}',
                             "'seq' 18446744073709551615"),
                            (b'[{"ts": 1, "lat": 1, "lon": 2}, {"ts": 2, "lat": 1, "lon": 2,'
                             b' "sats": -40000}]', "fix 1: 'sats' -40000")]:  # fmt: skip
        with pytest.raises(DecodeError, match=reason):
            gps_json.decode_array(payload)


def _by_rows(messages: list[list[object]]) -> tuple[list[tuple[object, ...]], dict[int, str]]:
    """The scalar reference: each message through the row decoder."""
    rows: list[tuple[object, ...]] = []
    errors: dict[int, str] = {}
    for i, items in enumerate(messages):
        try:
            rows.extend(gps_json._rows(items))
        except DecodeError as exc:
            errors[i] = str(exc)
    return rows, errors


def _same(fixes: np.ndarray, rows: list[tuple[object, ...]]) -> bool:
    expected = np.array(rows, dtype=GPS_FIX_DTYPE)
    return len(fixes) == len(expected) and all(
        np.array_equal(fixes[name], expected[name], equal_nan=fixes[name].dtype.kind == "f")
        for name in GPS_FIX_DTYPE.names or ()
    )


def test_batch_decoder_matches_the_row_decoder_on_seeded_fixes() -> None:
    rng = np.random.default_rng(3)
    messages: list[list[object]] = []
    for m in range(200):
        items: list[object] = []
        for _ in range(int(rng.integers(1, 60))):
            fix: dict[str, object] = {"ts": float(1.79e9 + rng.uniform(0, 1e6)),
                                      "lat": float(rng.uniform(-90, 90)),
                                      "lon": float(rng.uniform(-180, 180))}  # fmt: skip
            if m % 3:  # some messages carry the optional fields, not always all of them
                for key in ("speed", "heading", "acc", "alt"):
                    if rng.random() < 0.8:
                        fix[key] = float(rng.uniform(0, 100)) if rng.random() < 0.9 else 7
                for key in ("sats", "seq"):
                    if rng.random() < 0.8:
                        fix[key] = int(rng.integers(0, 30))
            if m % 7 == 0:
                fix["ts"] = int(fix["ts"])  # type: ignore[call-overload]
            if m % 11 == 0:
                fix["ts"] = "2026-11-24T08:15:02.250+01:00"
            items.append(fix)
        messages.append(items)
    decoded = gps_json.decode_parsed(messages)
    rows, errors = _by_rows(messages)
    assert not errors and not decoded.errors
    assert decoded.counts == [len(m) for m in messages]
    assert _same(decoded.fixes, rows)
    messages[5][3]["lat"] = "52.5"  # type: ignore[index]  # one bad fix fails its message only
    decoded = gps_json.decode_parsed(messages)
    rows, errors = _by_rows(messages)
    assert {i: str(e) for i, e in decoded.errors.items()} == errors
    assert errors.keys() == {5} and errors[5].startswith("fix 3: ")
    assert decoded.counts[5] == 0 and _same(decoded.fixes, rows)


_value = (st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
          | st.integers(min_value=-(2**64), max_value=2**64) | st.sampled_from(
              ["2026-11-24T08:15:02+00:00", "x", "2026-11-24T08:15:02"]))  # fmt: skip
_fix = st.dictionaries(st.sampled_from(["ts", "lat", "lon", "speed", "heading", "acc", "alt",
                                        "sats", "seq", "x"]), _value, max_size=10)  # fmt: skip
_plain_fix = st.fixed_dictionaries(
    {"ts": st.floats(0, 4e9) | st.integers(0, 4 * 10**9), "lat": st.floats(-90, 90),
     "lon": st.integers(-180, 180)},
    optional={"speed": st.floats(0, 50) | st.none(), "sats": st.integers(-1, 40),
              "seq": st.integers(0, 2**62) | st.none(), "alt": st.floats(-100, 5000)})  # fmt: skip


@given(st.lists(st.lists(_plain_fix | _fix | _value, max_size=6), min_size=1, max_size=5))
def test_batch_decoder_matches_the_row_decoder(messages: list[list[object]]) -> None:
    decoded = gps_json.decode_parsed(messages)
    rows, errors = _by_rows(messages)
    assert {i: str(e) for i, e in decoded.errors.items()} == errors
    assert decoded.counts == [0 if i in errors else len(m) for i, m in enumerate(messages)]
    assert _same(decoded.fixes, rows)
