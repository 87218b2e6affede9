import time

import numpy as np
import pytest

from devices.gps import json as gps_json
from devices.records import GpsFix, fixes_to_array
from ingest import batch as batch_module
from ingest.batch import Batch, DeadLetter, Drained, concat_fixes


def test_batch_is_due_by_rows_messages_or_age() -> None:
    b = Batch(max_rows=3, max_messages=100, max_ms=10_000)
    b.add_fixes("A", fixes_to_array([GpsFix(1, 1, 1), GpsFix(2, 1, 1)]), 5, token="t1")
    assert not b.due()
    b.add_fixes("B", fixes_to_array([GpsFix(3, 1, 1)]), 6, token="t2")
    assert b.due()
    drained = b.drain()
    assert drained.tokens == ["t1", "t2"] and drained.messages == 2
    assert drained.fixes.vehicles == ["A", "B"]
    assert drained.fixes.vehicle.tolist() == [0, 0, 1]
    assert drained.fixes.received_us.tolist() == [5, 5, 6]
    assert b.rows == 0 and b.messages == 0 and not b.due()

    b = Batch(max_rows=100, max_messages=2, max_ms=10_000)
    b.add_dead(DeadLetter(1, "t", b"x", "bad"), token="a")
    assert not b.due()
    b.add_fixes("A", fixes_to_array([]), 1, token="b")
    assert b.due()
    assert len(b.drain().fixes) == 0

    b = Batch(max_rows=100, max_messages=100, max_ms=1)
    b.add_dead(DeadLetter(1, "t", b"x", "bad"))
    time.sleep(0.005)
    assert b.due()


def _parsed(*fixes: GpsFix) -> list[object]:
    return gps_json.parse(gps_json.encode(list(fixes)))


def test_gps_json_is_decoded_with_its_batch_in_receipt_order() -> None:
    b = Batch(max_rows=1000, max_messages=1000, max_ms=10_000)
    b.add_json("A", _parsed(GpsFix(1_000_000, 1.0, 2.0, 3.0)), 5, "fleet/A/gps", b"a", token="t1")
    b.add_fixes("B", fixes_to_array([GpsFix(2_000_000, 1.5, 2.5)]), 6, token="t2")
    b.add_json("A", _parsed(GpsFix(3_000_000, 1.0, 2.0), GpsFix(4_000_000, 1.1, 2.1, seq=7)), 7,
               "fleet/A/gps", b"b", token="t3")  # fmt: skip
    b.add_json("C", [], 8, "fleet/C/gps", b"[]", token="t4")  # a valid message with no fix
    assert b.rows == 4 and b.messages == 4
    drained = b.drain()
    assert drained.tokens == ["t1", "t2", "t3", "t4"] and not drained.dead
    f = drained.fixes
    assert f.fix["ts_us"].tolist() == [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    assert [f.vehicles[c] for c in f.vehicle.tolist()] == ["A", "B", "A", "A"]
    assert f.received_us.tolist() == [5, 6, 7, 7]
    assert f.fix["speed_mps"][0] == 3.0 and np.isnan(f.fix["speed_mps"][1:]).all()
    assert f.fix["seq"].tolist() == [-1, -1, -1, 7]


def test_a_malformed_gps_json_message_is_a_dead_letter_of_its_batch() -> None:
    b = Batch(max_rows=1000, max_messages=1000, max_ms=10_000)
    good = _parsed(GpsFix(1_000_000, 1.0, 2.0))
    b.add_json("A", good, 5, "fleet/A/gps", b"good", token="t1")
    bad = [{"ts": 2, "lat": 1, "lon": 2}, {"ts": 3, "lat": "52", "lon": 2}]
    b.add_json("B", bad, 6, "fleet/B/gps", b"bad", token="t2")
    b.add_json("A", _parsed(GpsFix(3_000_000, 1.0, 2.0)), 7, "fleet/A/gps", b"good", token="t3")
    drained = b.drain()
    assert drained.tokens == ["t1", "t2", "t3"]  # acknowledged with the batch, stored or not
    assert [(d.received_us, d.source, d.payload) for d in drained.dead] == [
        (6, "fleet/B/gps", b"bad")
    ]
    assert drained.dead[0].reason == "fix 1: 'lat' must be a number, got str"
    assert drained.fixes.fix["ts_us"].tolist() == [1_000_000, 3_000_000]
    assert drained.fixes.received_us.tolist() == [5, 7]


def test_gps_json_decoded_along_the_way_gives_the_same_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    messages = []
    for m in range(40):
        n = int(rng.integers(0, 7))
        fixes = [GpsFix(int(1e15) + m * 100 + k, float(rng.uniform(-9, 9)), 1.0) for k in range(n)]
        items: list[object] = gps_json.parse(gps_json.encode(fixes)) if fixes else []
        if m == 13:
            items = [{"ts": 1, "lat": 1}]  # no lon: a dead letter
        messages.append((f"V{m % 3}", items, m))

    def batch() -> Drained:
        b = Batch(max_rows=10_000, max_messages=10_000, max_ms=10_000)
        for vid, items, m in messages:
            if m % 10 == 9:
                b.add_fixes(vid, fixes_to_array([GpsFix(m, 0.5, 0.5)]), m, token=m)
            else:
                b.add_json(vid, list(items), m, f"fleet/{vid}/gps", b"", token=m)
        return b.drain()

    at_drain = batch()
    monkeypatch.setattr(batch_module, "DECODE_FIXES", 5)
    along = batch()
    a, d = along.fixes, at_drain.fixes
    assert len(d) > 50 and a.fix.tobytes() == d.fix.tobytes()
    assert [a.vehicles[c] for c in a.vehicle] == [d.vehicles[c] for c in d.vehicle]
    assert a.received_us.tolist() == d.received_us.tolist()
    assert [d.reason for d in along.dead] == [d.reason for d in at_drain.dead] == ["missing 'lon'"]
    assert along.tokens == at_drain.tokens == list(range(40))


def test_a_decoder_bug_costs_only_the_messages_it_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    real = gps_json.decode_parsed

    def buggy(messages: list[list[object]]) -> gps_json.Decoded:
        if any(len(m) == 2 for m in messages):
            raise IndexError("a bug")
        return real(messages)

    monkeypatch.setattr(gps_json, "decode_parsed", buggy)
    b = Batch(max_rows=1000, max_messages=1000, max_ms=10_000)
    b.add_json("A", _parsed(GpsFix(1_000_000, 1.0, 2.0)), 5, "fleet/A/gps", b"one", token=1)
    b.add_json("A", _parsed(GpsFix(2_000_000, 1.0, 2.0), GpsFix(3_000_000, 1.0, 2.0)), 6,
               "fleet/A/gps", b"two", token=2)  # fmt: skip
    drained = b.drain()
    assert drained.fixes.fix["ts_us"].tolist() == [1_000_000]
    assert [(d.payload, d.reason) for d in drained.dead] == [
        (b"two", "internal error: IndexError: a bug")
    ]


def test_concat_fixes_is_np_concatenate() -> None:
    parts = [
        fixes_to_array([GpsFix(i * 10 + k, 1.0, 2.0, sats=k) for k in range(i)])
        for i in range(1, 6)
    ]
    parts.append(parts[2][::2])  # not contiguous
    assert concat_fixes(parts).tobytes() == np.concatenate(parts).tobytes()
    assert concat_fixes(parts[:1]) is parts[0]
