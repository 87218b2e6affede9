"""OsmAnd / Traccar Client decoder: requests from Traccar's tests and issue threads.

"traccar test" = traccar/traccar src/test/java/org/traccar/protocol/OsmAndProtocolDecoderTest.java
(commit 24157c0a). Query strings are parsed here as an HTTP handler would, with
``urllib.parse.parse_qsl``; expected values are worked out from the request text.
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, tzinfo
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError, FieldError
from devices.gps import osmand
from tests.devices.invariants import check_fix

NOW_US = 1_795_504_502_000_000  # 2026-11-24T07:15:02Z, the receive time a handler passes


def _params(uri: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(uri).query, keep_blank_values=True)


def _query(uri: str, *, tz: tzinfo = UTC, now_us: int | None = None) -> osmand.OsmandMessage:
    message = osmand.decode_query(_params(uri), tz=tz, now_us=now_us)
    for fix in message.fixes:
        check_fix(fix)
    return message


def _json(body: bytes) -> osmand.OsmandMessage:
    message = osmand.decode_json(body)
    for fix in message.fixes:
        check_fix(fix)
    return message


# --- query mode ---------------------------------------------------------------------------


def test_iso_timestamp_hdop_altitude() -> None:
    # traccar test
    m = _query(
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z"
        "&hdop=6.0&altitude=224.0&speed=0.0"
    )
    [fix] = m.fixes
    assert m.device_id == "902064"
    assert fix.ts_us == 1_453_920_947_000_000
    assert (fix.lat_deg, fix.lon_deg, fix.hdop, fix.alt_m, fix.speed_mps) == (
        42.06288,
        -88.23412,
        6.0,
        224.0,
        0.0,
    )


def test_millisecond_timestamp() -> None:
    # traccar test
    m = _query(
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0"
        "&altitude=224.0&speed=0.0"
    )
    assert m.fixes[0].ts_us == 1_442_068_686_579_000


def test_local_time_string_uses_the_given_zone() -> None:
    # traccar test: a Luxembourg device sending "2014-06-04 09:10:11" local time.
    uri = (
        "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7"
        "&speed=0.0&id=353861053849681"
    )
    assert _query(uri).fixes[0].ts_us == 1_401_873_011_000_000  # read as UTC
    lux = _query(uri, tz=ZoneInfo("Europe/Luxembourg"))
    assert lux.fixes[0].ts_us == 1_401_865_811_000_000  # 07:10:11Z, CEST
    assert lux.device_id == "353861053849681"


def test_seconds_timestamp_and_bearing() -> None:
    # traccar test
    m = _query(
        "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0"
        "&altitude=0&hdop=0.0"
    )
    [fix] = m.fixes
    assert fix.ts_us == 1_377_177_267_000_000
    assert (fix.heading_deg, fix.alt_m, fix.hdop) == (0.0, 0.0, 0.0)


def test_minimal_request_leaves_optionals_unknown() -> None:
    # traccar test
    [fix] = _query("/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0").fixes
    for value in (fix.speed_mps, fix.heading_deg, fix.acc_m, fix.alt_m, fix.hdop):
        assert math.isnan(value)


def test_location_parameter() -> None:
    # traccar test
    [fix] = _query("/?id=123456&timestamp=1377177267&location=60.0,30.0").fixes
    assert (fix.lat_deg, fix.lon_deg) == (60.0, 30.0)


def test_speed_is_knots_and_extras_are_ignored() -> None:
    # traccar test
    [fix] = _query(
        "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
        "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24"
    ).fixes
    assert fix.speed_mps == pytest.approx(40 * 0.514444, rel=1e-5)
    assert fix.heading_deg == 7.19889788244


def test_missing_timestamp_uses_receive_time_or_fails() -> None:
    # traccar test: deviceid instead of id, heading instead of bearing, no timestamp.
    uri = "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456"
    m = _query(uri, now_us=NOW_US)
    assert m.device_id == "123456" and m.fixes[0].ts_us == NOW_US
    assert m.fixes[0].heading_deg == 0.0
    with pytest.raises(FieldError, match="timestamp is missing"):
        _query(uri)


def test_battery_percent() -> None:
    # traccar test
    m = _query(
        "/?id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479"
        "&speed=0.000000&batt=87",
        now_us=NOW_US,
    )
    assert m.battery_pct == 87.0 and m.fixes[0].alt_m == 350.059479


def test_impossible_battery_is_unknown() -> None:
    # traccar/traccar issue #2372, request hex from the server log: a client sent its
    # device id as the battery level.
    request = bytes.fromhex(
        "474554202f3f69643d34333632382674696d657374616d703d31343735353634313131266c61743d31"
        "372e373234303637266c6f6e3d38332e333138362673706565643d302662656172696e673d302e3026"
        "616c7469747564653d302e3026626174743d34333632382e3020485454502f312e310d0a486f73743a"
        "206c6f63616c686f73743a353035350d0a0d0a"
    )
    uri = request.split(b" ")[1].decode()
    m = _query(uri)
    assert m.device_id == "43628" and math.isnan(m.battery_pct)
    assert m.fixes[0].ts_us == 1_475_564_111_000_000


def test_old_traccar_client_request() -> None:
    # traccar/traccar-client issue #85: what app 7.9 sent (ms timestamp, speed in knots).
    [fix] = _query(
        "/?id=82879256&lat=-35.5555277&lon=145.5555733&timestamp=1693222306574"
        "&speed=0.211914&bearing=26.21394&accuracy=22.975999"
    ).fixes
    assert fix.ts_us == 1_693_222_306_574_000
    assert fix.acc_m == 22.975999 and fix.speed_mps == pytest.approx(0.211914 * 0.514444)


def test_cell_and_wifi_only_is_a_message_without_fix() -> None:
    # traccar test
    m = _query(
        "/?id=123456&timestamp=1377177267&cell=257,02,16,2224&cell=257,02,16,2223,-90"
        "&wifi=00-14-22-01-23-45,-80&wifi=00-1C-B3-09-85-15,-70"
    )
    assert m.device_id == "123456" and m.fixes == []


def test_missing_id_is_refused() -> None:
    # traccar test
    with pytest.raises(FieldError, match="id or deviceid"):
        _query("/?timestamp=1377177267&lat=60.0&lon=30.0")


@pytest.mark.parametrize("valid", ["false", "0", "False"])
def test_invalid_flag_gives_no_fix(valid: str) -> None:
    uri = f"/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&valid={valid}"
    assert _query(uri).fixes == []


@pytest.mark.parametrize("valid", ["true", "1", "TRUE"])
def test_valid_flag_keeps_the_fix(valid: str) -> None:
    uri = f"/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&valid={valid}"
    assert len(_query(uri).fixes) == 1


def test_mapping_input_and_negative_unknowns() -> None:
    m = osmand.decode_query(
        {
            "id": "7",
            "timestamp": "1377177267",
            "lat": "-33.9",
            "lon": "18.4",
            "speed": "-1",
            "bearing": "-1",
            "accuracy": "-1",
            "altitude": "-12.5",
        }
    )
    [fix] = m.fixes
    assert math.isnan(fix.speed_mps) and math.isnan(fix.heading_deg) and math.isnan(fix.acc_m)
    assert fix.alt_m == -12.5  # below sea level is real


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("/?id=1&timestamp=1377177267&lat=60.0", "position missing"),
        ("/?id=1&timestamp=1377177267&lat=91&lon=30", "out of range"),
        ("/?id=1&timestamp=1377177267&lat=nan&lon=30", "not a decimal"),
        ("/?id=1&timestamp=1377177267&lat=60&lon=3_0", "not a decimal"),
        ("/?id=1&timestamp=1377177267&lat=60&lon=30&speed=1e999", "not finite"),
        ("/?id=1&timestamp=1377177267&location=60.0", "lat,lon"),
        ("/?id=1&timestamp=yesterday&lat=60&lon=30", "malformed"),
        ("/?id=1&timestamp=2016-13-27T18:55:47Z&lat=60&lon=30", "malformed"),
        ("/?id=1&timestamp=12&lat=60&lon=30", "outside 2000..2100"),
        ("/?id=1&timestamp=1377177267&lat=60&lon=30&bearing=361", "heading"),
        ("/?id=&timestamp=1377177267&lat=60&lon=30", "id or deviceid"),
    ],
)
def test_malformed_queries_say_why(uri: str, reason: str) -> None:
    with pytest.raises(FieldError, match=reason):
        _query(uri)


def test_null_island_gives_no_fix() -> None:
    assert _query("/?id=1&timestamp=1377177267&lat=0&lon=0").fixes == []


# --- JSON mode ----------------------------------------------------------------------------

# traccar test (testDecodeJson), in order.
JSON_ANDROID = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},'
    b'"activity":{"type":"still"},"extras":{},'
    b'"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},'
    b'"device_id":"48241179"}'
)
JSON_EXTRAS = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},'
    b'"activity":{"type":"still"},"extras":{"device_string_test":"long_device_id",'
    b'"device_bool_test":true,"device_bool_false_test":false,"device_integer_test":1,'
    b'"device_double_test":1.345,"device_very_long_double_test":1763636.3442},'
    b'"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},'
    b'"device_id":"48241179"}'
)
JSON_IOS = (
    b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,'
    b'"longitude":-122.406417,"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,'
    b'"latitude":37.785834000000001,"accuracy":5,"altitude_accuracy":-1,"altitude":0,'
    b'"heading":-1},"is_moving":false,"age":188,"odometer":0,'
    b'"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange",'
    b'"battery":{"level":-1,"is_charging":false},"activity":{"type":"unknown","confidence":100},'
    b'"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}'
)
JSON_MOVING = (
    b'{"location":{"event":"motionchange","is_moving":false,'
    b'"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75","timestamp":"2021-07-21T08:06:34.444Z",'
    b'"odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,"accuracy":3.8,'
    b'"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,'
    b'"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},'
    b'"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}'
)
# traccar/traccar-client issue #85: what app 9.5.3 sent.
JSON_ISSUE_85 = (
    b'{"location": {"timestamp": "2025-08-28T11:51:46.587Z", "coords": {"latitude": -37.6998277,'
    b' "longitude": 145.0686733, "accuracy": 4.32, "speed": 0.11, "heading": 158.44,'
    b' "altitude": 103}, "is_moving": true, "odometer": 0,'
    b' "battery": {"level": 0.88, "is_charging": false}, "activity": {"type": "still"}},'
    b' "device_id": "82879256"}'
)
JSON_BODIES = [JSON_ANDROID, JSON_EXTRAS, JSON_IOS, JSON_MOVING, JSON_ISSUE_85]


def test_json_android_motionchange() -> None:
    m = _json(JSON_ANDROID)
    [fix] = m.fixes
    assert m.device_id == "48241179"
    assert fix.ts_us == 1_749_995_112_862_000
    assert (fix.lat_deg, fix.lon_deg, fix.acc_m, fix.alt_m, fix.speed_mps) == (
        37.4219983,
        -122.084,
        5.0,
        5.0,
        0.0,
    )
    assert math.isnan(fix.heading_deg)  # -1 = unknown
    assert (m.battery_pct, m.charging) == (100.0, False)
    assert _json(JSON_EXTRAS) == m  # vendor extras are ignored


def test_json_ios_unknowns() -> None:
    m = _json(JSON_IOS)
    [fix] = m.fixes
    assert fix.ts_us == 1_746_763_890_579_000
    assert math.isnan(fix.speed_mps) and math.isnan(fix.heading_deg)
    assert math.isnan(m.battery_pct)  # level -1


def test_json_speed_is_metres_per_second() -> None:
    [fix] = _json(JSON_MOVING).fixes
    assert (fix.speed_mps, fix.heading_deg, fix.ts_us) == (18.67, 63.0, 1_626_854_794_444_000)
    [fix] = _json(JSON_ISSUE_85).fixes
    assert (fix.speed_mps, fix.heading_deg, fix.acc_m) == (0.11, 158.44, 4.32)


def test_json_location_list() -> None:
    # Constructed: two of the bodies above batched as a list, as batch-sync clients do.
    a, b = json.loads(JSON_ANDROID), json.loads(JSON_MOVING)
    body = json.dumps({"location": [a["location"], b["location"]], "device_id": "1"})
    m = _json(body.encode())
    assert [f.ts_us for f in m.fixes] == [1_749_995_112_862_000, 1_626_854_794_444_000]
    assert m.battery_pct == pytest.approx(79.0)  # from the last location
    assert _json(b'{"location": [], "device_id": "1"}').fixes == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "malformed"),
        (b"[]", "JSON object"),
        (b'{"location": {}}', "device_id"),
        (b'{"location": {}, "device_id": 48241179}', "device_id"),
        (b'{"device_id": "1"}', "location"),
        (b'{"location": [1], "device_id": "1"}', "location"),
        (b'{"location": {"timestamp": "2025-06-15T13:45:12Z"}, "device_id": "1"}', "coords"),
        (b'{"location": {"timestamp": "x", "coords": {}}, "device_id": "1"}', "malformed"),
        (
            b'{"location": {"timestamp": "2025-06-15T13:45:12Z", "coords": {"latitude": 1}},'
            b' "device_id": "1"}',
            "longitude",
        ),
        (
            b'{"location": {"timestamp": "2025-06-15T13:45:12Z", "coords": {"latitude": "1",'
            b' "longitude": 2}}, "device_id": "1"}',
            "latitude",
        ),
        (
            b'{"location": {"timestamp": "2025-06-15T13:45:12Z", "coords": {"latitude": 1,'
            b' "longitude": 2, "speed": Infinity}}, "device_id": "1"}',
            "not finite",
        ),
    ],
)
def test_malformed_json_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(FieldError, match=reason):
        osmand.decode_json(body)


@pytest.mark.parametrize("body", JSON_BODIES)
def test_every_prefix_of_a_json_body_raises_or_gives_nothing(body: bytes) -> None:
    for n in range(len(body)):
        with contextlib.suppress(DecodeError):
            assert osmand.decode_json(body[:n]).fixes == []


# --- arbitrary input ----------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(osmand.decode_json(data), osmand.OsmandMessage)


_KEYS = st.sampled_from(
    [
        "id",
        "deviceid",
        "timestamp",
        "lat",
        "lon",
        "location",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "charge",
        "valid",
        "x",
    ]
)


@given(st.lists(st.tuples(_KEYS, st.text(max_size=24)), max_size=10), st.booleans())
def test_any_parameters_give_a_message_or_decode_error(
    params: list[tuple[str, str]], with_now: bool
) -> None:
    try:
        m = osmand.decode_query(params, now_us=NOW_US if with_now else None)
    except DecodeError:
        return
    for fix in m.fixes:
        assert -90.0 <= fix.lat_deg <= 90.0 and -180.0 <= fix.lon_deg <= 180.0


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "location",
                        "device_id",
                        "timestamp",
                        "coords",
                        "latitude",
                        "longitude",
                        "speed",
                        "heading",
                        "battery",
                        "level",
                    ]
                ),
                c,
                max_size=5,
            )
        ),
        max_leaves=15,
    )
)
def test_any_json_gives_a_message_or_decode_error(doc: object) -> None:
    try:
        body = json.dumps(doc).encode()
    except ValueError:
        return
    with contextlib.suppress(DecodeError):
        osmand.decode_json(body)


def test_a_stored_request_decodes_as_it_was_received() -> None:
    """decode_request, as ingest reads a report back from fix_inbox: the query string and the
    form body joined by ``&`` give the parameters of both (the body's win a repeated key),
    and a JSON body decodes as decode_json does."""
    query, form = b"id=123456&lat=52.51&lon=13.39", b"timestamp=1795504500&speed=10&lat=52.52"
    got = osmand.decode_request(query + b"&" + form, json_mode=False, now_us=NOW_US)
    assert got.device_id == "123456" and len(got.fixes) == 1
    fix = got.fixes[0]
    assert (fix.lat_deg, fix.lon_deg, fix.ts_us) == (52.52, 13.39, 1_795_504_500_000_000)
    assert fix.speed_mps == pytest.approx(10 * osmand.KNOT_MPS)
    no_time = osmand.decode_request(query, json_mode=False, now_us=NOW_US)
    assert no_time.fixes[0].ts_us == NOW_US  # no timestamp: the receive time stored with it
    body = json.dumps({"device_id": "7", "location": {"timestamp": "2026-11-24T07:15:00Z",
                       "coords": {"latitude": 1.5, "longitude": 2.5}}}).encode()  # fmt: skip
    assert osmand.decode_request(body, json_mode=True) == osmand.decode_json(body)
    with pytest.raises(DecodeError):
        osmand.decode_request(body, json_mode=False)  # a JSON body is no query
