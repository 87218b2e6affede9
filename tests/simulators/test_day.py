"""A simulated day replayed through ingest's pipeline: every injected fault is reported as
the right exception and nothing else is; bindings match the truth; the same day replayed
in bigger batches (a fast replay) or twice gives the same answers."""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import pytest

from ingest.manifest import parse_manifest
from ingest.replay import Replayed, pipeline_for, replay
from simulators.day import Day, DayConfig, gate_entries, make_day

T0 = 1_795_500_000_000_000
CONFIG = DayConfig(vans=5, stops_per_van=10, misload=0.05, left_behind=0.05, wrong_drop=0.05,
                   failed=0.08, warm=0.6, cold_share=0.3, late=0.1)  # fmt: skip


@cache
def day(seed: int) -> Day:
    return make_day(CONFIG, seed=seed, start_us=T0)


def run(d: Day, batch_s: float) -> Replayed:
    doc = dict(d.manifest)
    doc["gates"] = gate_entries(d, {g.gate_id: f"/dev/null/{g.gate_id}" for g in d.gates})
    return replay(pipeline_for(parse_manifest(doc)), start_us=d.start_us,
                  end_us=d.end_us + 300_000_000, fixes=d.fixes, reads=d.reads(), cargo=d.cargo,
                  sensors=d.sensors, pods=d.pods, batch_s=batch_s)  # fmt: skip


def events(r: Replayed) -> list[tuple[Any, ...]]:
    return r.rows.get("parcel_event", [])


def bindings(r: Replayed) -> dict[str, str]:
    """The van each parcel was first bound to by RFID."""
    out: dict[str, str] = {}
    for e in events(r):
        if e[4] in ("InTransit_007", "Exception_MISLOAD"):
            out.setdefault(e[2], e[5])
    return out


def final(r: Replayed) -> dict[str, tuple[str, str]]:
    return {row[0]: (row[2], row[3]) for row in r.rows.get("parcel_latest", [])}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_fault_is_reported_as_its_exception_and_nothing_else_is(seed: int) -> None:
    d = day(seed)
    r = run(d, 1.0)
    truth = d.truth
    assert len(truth.exception_pairs()) >= 5 and truth.attempts  # the day has faults to find
    got = {(e[2], e[4]) for e in events(r) if e[3] == "Exception"}
    assert got == truth.exception_pairs()
    assert {e[2] for e in events(r) if e[3] == "AttemptFail"} == truth.attempts
    assert {e[2]: e[0] for e in events(r) if e[3] == "Delivered" and e[9].obj["evidence"]
            == "cargo"}.keys() <= truth.delivered.keys()  # fmt: skip
    assert {e[2] for e in events(r) if e[3] == "Delivered"} == truth.delivered.keys()
    assert bindings(r) == truth.bindings


def test_a_fast_replay_in_big_batches_and_a_second_replay_agree() -> None:
    d = day(2)
    slow, fast, again = run(d, 1.0), run(d, 20.0), run(d, 1.0)
    assert final(fast) == final(slow) and bindings(fast) == bindings(slow)
    assert [e[1:5] for e in events(again)] == [e[1:5] for e in events(slow)]
    # exceptions and statuses do not depend on the batching; only LATE's stamp may
    assert Counter(e[4] for e in events(fast)) == Counter(e[4] for e in events(slow))


def test_the_day_is_seeded_and_its_truth_consistent() -> None:
    a, b = make_day(CONFIG, seed=7, start_us=T0), make_day(CONFIG, seed=7, start_us=T0)
    assert a.manifest == b.manifest and a.truth == b.truth
    assert all((a.fixes[v][["ts_us", "lon_deg", "lat_deg"]] == b.fixes[v][["ts_us", "lon_deg",
               "lat_deg"]]).all() for v in a.fixes)  # fmt: skip
    parcels = {p["tracking_number"] for p in a.manifest["parcels"]}
    t = a.truth
    assert t.bindings.keys() <= parcels and t.delivered.keys() <= t.bindings.keys()
    # a parcel is delivered, failed, or an exception that kept it from its stop
    for tn in parcels:
        kinds = t.exceptions.get(tn, set()) - {"Exception_LATE", "Exception_COLD_CHAIN"}
        assert (tn in t.delivered) + (tn in t.attempts) + bool(kinds) == 1, tn
