"""fleet/{id}/cargo, /sensor and /pod payloads: decoding, errors, and encoders as inverses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError
from devices.fleet import (
    CargoScan,
    ProofOfDelivery,
    SensorReading,
    decode_cargo,
    decode_pod,
    decode_sensor,
    encode_cargo,
    encode_pod,
    encode_sensor,
)

TS = "2026-11-24T09:15:00.250000+00:00"
TS_US = 1_795_511_700_250_000


def test_cargo_inventory_sorted_upper_case_and_deduplicated() -> None:
    scan = decode_cargo(b'{"ts": "%s", "epcs": ["3074257bf7194e4000001a85",'
                        b' "3074257BF7194E4000001A85", "ABCD"]}' % TS.encode())  # fmt: skip
    assert scan == CargoScan(TS_US, ("3074257BF7194E4000001A85", "ABCD"))
    assert decode_cargo(b'{"ts": 1795511700.25, "epcs": []}') == CargoScan(TS_US, ())


def test_sensor_reading_needs_one_value_and_pod_its_fields() -> None:
    r = decode_sensor(b'{"ts": "%s", "temp_c": 4.5}' % TS.encode())
    assert (r.ts_us, r.temp_c) == (TS_US, 4.5) and math.isnan(r.humidity)
    pod = decode_pod(b'{"ts": "%s", "tracking_number": "MP100200300", "outcome": "failed",'
                     b' "reason": "business closed"}' % TS.encode())  # fmt: skip
    assert pod == ProofOfDelivery(TS_US, "MP100200300", "failed", reason="business closed")


@pytest.mark.parametrize(("decoder", "payload", "message"), [
    (decode_cargo, b'{"ts": 1795511700, "epcs": "ABCD"}', "'epcs' must be a list"),
    (decode_cargo, b'{"ts": 1795511700, "epcs": ["XYZ1"]}', "epcs[0] is not an EPC"),
    (decode_cargo, b'{"epcs": []}', "ts"),
    (decode_sensor, b'{"ts": 1795511700}', "needs 'temp_c' or 'humidity'"),
    (decode_sensor, b'{"ts": 1795511700, "temp_c": "warm"}', "finite number"),
    (decode_pod, b'{"ts": 1795511700, "tracking_number": "x", "outcome": "delivered"}',
     "tracking_number"),
    (decode_pod, b'{"ts": 1795511700, "tracking_number": "MP100200300", "outcome": "lost"}',
     "'outcome'"),
    (decode_pod, b"[1, 2]", "JSON object"),
    (decode_pod, b'{"ts": 1795511700, "tracking_number": "MP100200300", "outcome": "failed",'
                 b' "reason": "a\\u0000b"}', "control characters"),
    (decode_cargo, b'{"ts": "0001-01-01T00:00:00+01:00", "epcs": []}', "out of range|between"),
    (decode_sensor, b'{"ts": "9999-12-31T00:00:00Z", "temp_c": 4}', "between 1970 and 2100"),
    (decode_pod, b"\xff{", "not JSON"),
    # python -m fuzz (fleet harness): `$` also matches before a final newline
    (decode_pod, b'{"ts": 1795511700, "tracking_number": "MP100200300\\n", "outcome": "failed"}',
     "tracking_number"),
    (decode_cargo, b'{"ts": 1795511700, "epcs": ["ABCD\\n"]}', "epcs[0] is not an EPC"),
])  # fmt: skip
def test_malformed_payloads_say_what_is_wrong(decoder: object, payload: bytes,
                                              message: str) -> None:  # fmt: skip
    with pytest.raises(DecodeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decoder(payload)  # type: ignore[operator]


def test_every_prefix_of_a_payload_is_an_error_not_a_crash() -> None:
    for payload, decoder in ((encode_cargo(CargoScan(TS_US, ("ABCD", "3074257BF7194E4000001A85"))),
                              decode_cargo),
                             (encode_sensor(SensorReading(TS_US, 4.5, 50.0)), decode_sensor),
                             (encode_pod(ProofOfDelivery(TS_US, "MP100200300", "delivered",
                                                         signed_by="J. Doe")), decode_pod)):
        for k in range(len(payload)):
            with pytest.raises(DecodeError):
                decoder(payload[:k])
        decoder(payload)


ts_us = st.integers(946_684_800, 1_900_000_000).map(lambda s: s * 1_000_000)
epc = st.binary(min_size=2, max_size=31).map(lambda b: b.hex().upper())


@given(ts_us, st.lists(epc, max_size=20, unique=True))
def test_cargo_round_trip(ts: int, epcs: list[str]) -> None:
    scan = CargoScan(ts, tuple(sorted(epcs)))
    assert decode_cargo(encode_cargo(scan)) == scan


@given(ts_us, st.floats(-60, 60), st.one_of(st.just(math.nan), st.floats(0, 100)))
def test_sensor_round_trip(ts: int, temp: float, humidity: float) -> None:
    r = decode_sensor(encode_sensor(SensorReading(ts, temp, humidity)))
    assert (r.ts_us, r.temp_c) == (ts, temp)
    assert (math.isnan(r.humidity) and math.isnan(humidity)) or r.humidity == humidity


@given(ts_us, st.sampled_from(["delivered", "failed"]),
       st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cc", "Cs"]),
                                    min_size=1, max_size=50)))
def test_pod_round_trip(ts: int, outcome: str, reason: str | None) -> None:
    pod = ProofOfDelivery(ts, "MP100200300", outcome, reason=reason)
    assert decode_pod(encode_pod(pod)) == pod
