"""Device clocks that are off (ingest/clocks.py): the consensus, when an offset is applied
and when not, and the seeded day with one van's clock 10 minutes ahead or behind giving
the parcels the lifecycle and ETAs of the day with every clock right."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from devices.records import US_PER_S
from ingest.clocks import (
    AHEAD_CONFIRM_US,
    AHEAD_US,
    CONFIRM_US,
    ClockTracker,
    consensus_lag,
)
from ingest.hold import MAX_US
from ingest.manifest import parse_manifest
from ingest.parcels import ETA_EVERY_US
from ingest.pipeline import Pipeline
from ingest.replay import Replayed, pipeline_for, replay
from ingest.writer import datetime_to_us
from simulators.day import FAULTS_DAY, FAULTS_DAY_SEED, Day, gate_entries, make_day

S = US_PER_S
TEN_MIN = 600 * S
T0 = 1_795_500_000_000_000


def lags(*seconds: float) -> NDArray[np.int64]:
    return np.array([round(s * S) for s in seconds], np.int64)


# ---------------------------------------------------------------- the consensus


def test_the_consensus_is_the_largest_group_of_vans_that_agree() -> None:
    assert consensus_lag(lags(0.4, 0.2, 0.9, -600.0)) == round(0.4 * S)
    # two vans flushing backlogs and one ahead do not move it
    assert consensus_lag(lags(0.1, 0.3, 0.2, 900.0, 1250.0, -600.0)) == round(0.2 * S)
    # a fleet replayed at 50x: every van far "ahead" of the host, alike
    assert consensus_lag(lags(-4000.2, -4000.9, -4000.5, -4600.0)) == round(-4000.5 * S)


def test_no_consensus_without_two_vans_agreeing_and_a_tie_goes_nearest_the_host() -> None:
    assert consensus_lag(lags(0.1)) is None
    assert consensus_lag(lags(0.1, 600.0, -600.0)) is None
    assert consensus_lag(lags(0.0, 0.5, 600.0, 600.5)) == round(0.25 * S)
    assert consensus_lag(lags(-600.0, -600.5, 600.0, 600.5)) in (round(-600.25 * S),
                                                                 round(600.25 * S))


# ---------------------------------------------------------------- the tracker


class Fleet:
    """Vans fixing once a second of their own time, received ``pace`` times as fast as
    the host's clock runs (1: live; 50: a replayed day); ``skew_s`` per van."""

    def __init__(self, skew_s: dict[str, float], pace: float = 1.0) -> None:
        self.vans, self.skew, self.pace = list(skew_s), skew_s, pace
        self.tracker = ClockTracker()
        self.t_s = 0.0  # event time of the fleet

    def batch(self, seconds: float = 1.0, only: list[str] | None = None,
              late_s: dict[str, float] | None = None) -> dict[str, int]:  # fmt: skip
        """One batch of ``seconds`` of event time; ``late_s``: vans whose fixes arrive that
        much after they happened. Returns the applied offsets."""
        vans = only or self.vans
        codes, ts, got = [], [], []
        for k, v in enumerate(self.vans):
            if v not in vans:
                continue
            for i in range(round(seconds)):
                t = self.t_s + i
                codes.append(k)
                ts.append(T0 + round((t + self.skew[v]) * S))
                got.append(T0 + round(((self.t_s + seconds) / self.pace
                                       + (late_s or {}).get(v, 0.0) + 0.05 * k) * S))
        self.t_s += seconds
        self.tracker.observe(self.vans, np.array(codes, np.int32), np.array(ts, np.int64),
                             np.array(got, np.int64))  # fmt: skip
        return dict(self.tracker.offsets)


@pytest.mark.parametrize("pace", [1.0, 50.0])
def test_a_van_ahead_is_corrected_at_once_to_the_second(pace: float) -> None:
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 600.0, "D": 0.0}, pace)
    assert fleet.batch(5) == {"C": TEN_MIN}
    for _ in range(100):
        assert fleet.batch(1) == {"C": TEN_MIN}


def test_vans_whose_offset_is_known_vote_with_their_clock_set_right() -> None:
    """Batches that hold only the two vans 10 minutes ahead, once known, leave them known
    (with their raw lags they would agree on a reference 10 minutes off)."""
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 600.0, "D": 600.0})
    assert fleet.batch(2) == {"C": TEN_MIN, "D": TEN_MIN}
    for _ in range(200):
        assert fleet.batch(1, only=["C", "D"]) == {"C": TEN_MIN, "D": TEN_MIN}


def test_a_batch_whose_vans_disagree_is_compared_with_the_vans_seen_lately() -> None:
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 0.0, "D": 600.0})
    assert fleet.batch(1, only=["A", "B", "C"]) == {}
    fleet.t_s -= 1  # the same second, in the next batch: one van right, one ahead
    assert fleet.batch(1, only=["C", "D"]) == {"D": TEN_MIN}


def test_a_live_van_among_vans_flushing_their_backlogs_is_not_ahead() -> None:
    """Most of the fleet sends fixes 500 s old, one van sends them as they happen: it looks
    500 s ahead of the others, but the host's clock says it is not ahead at all."""
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0})
    for _ in range(100):
        assert fleet.batch(1, late_s={"A": 500.0, "B": 500.0, "C": 500.0}) == {}
    # a van 10 minutes ahead among them: ahead as far as the host proves (100 s), then
    # all of it once the fleet is live again
    fleet.skew["D"] = 600.0  # a van 10 minutes ahead among them: the host proves it
    got = fleet.batch(1, late_s={"A": 500.0, "B": 500.0, "C": 500.0})
    assert got.keys() == {"D"} and abs(got["D"] - TEN_MIN) <= 2 * S  # less its delay


def test_a_replayed_fleet_believes_a_van_ahead_only_once_it_persisted() -> None:
    """A day replayed at 50x runs far ahead of the host's clock; after a broker outage two
    vans flush for a few seconds (what they send is 150 s of the day old) while a third is
    live, and looks ahead of them."""
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 0.0}, pace=50.0)
    fleet.t_s = 100_000.0  # 98,000 s ahead of the host
    for _ in range(20):
        assert fleet.batch(50) == {}  # a second of receipt time each
    fleet.skew.update(A=-150.0, B=-150.0)
    for _ in range(5):
        assert fleet.batch(50) == {}
        assert fleet.tracker.undecided() == {"C"}  # its data waits (ingest/hold.py)
    fleet.skew.update(A=0.0, B=0.0)
    for _ in range(20):
        assert fleet.batch(50) == {}
    assert fleet.tracker.undecided() == set()
    fleet.skew["C"] = 600.0  # now it is ahead: believed after AHEAD_CONFIRM_US
    seen = [fleet.batch(50) for _ in range(20)]
    waited = sum(1 for x in seen if not x)
    assert AHEAD_CONFIRM_US / S <= waited <= AHEAD_CONFIRM_US / S + 2 and seen[-1] == {
        "C": TEN_MIN}


@pytest.mark.parametrize("pace", [1.0, 50.0])
def test_a_van_behind_is_corrected_once_it_persisted(pace: float) -> None:
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": -600.0, "D": 0.0}, pace)
    seen = [fleet.batch(1) for _ in range(round(CONFIRM_US / S) + 5)]
    waited = sum(1 for s in seen if not s)
    assert CONFIRM_US / S - 2 <= waited <= CONFIRM_US / S + 2
    assert seen[-1] == {"C": -TEN_MIN}


def test_a_backlog_flushed_in_order_over_many_batches_is_no_skew() -> None:
    """A van back from 20 minutes offline, its backlog coming 100 fixes a batch (each
    batch 100 s nearer the present): its lag falls too fast to be a clock."""
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 0.0})
    for _ in range(60):
        fleet.batch(1)
    backlog = 1200.0
    while backlog > 0:  # the others live, C's oldest fixes first
        assert fleet.batch(1, only=["A", "B"]) == {}
        fleet.t_s -= 1
        assert fleet.batch(1, only=["C"], late_s={"C": backlog}) == {}
        backlog -= 100
    for _ in range(30):
        assert fleet.batch(1) == {}


def test_late_data_of_the_whole_fleet_is_no_skew() -> None:
    """ingest back after 10 minutes down: every van's queued fixes arrive late, alike."""
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 0.0})
    for k in range(300):
        assert fleet.batch(1, late_s={v: 600.0 - 2 * k for v in "ABC"}) == {}


def test_a_clock_put_right_is_followed_and_lone_vans_are_left_alone() -> None:
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": 300.0})
    assert fleet.batch(2) == {"C": 300 * S}
    fleet.skew["C"] = 0.0  # its clock synchronized again: looks behind its correction
    seen = [fleet.batch(1) for _ in range(round(CONFIRM_US / S) + 5)]
    assert seen[0] == {"C": 300 * S} and seen[-1] == {}
    lone = Fleet({"A": 900.0})
    assert all(lone.batch(1) == {} for _ in range(10))  # nobody to agree with


def test_small_offsets_and_network_delay_change_nothing() -> None:
    fleet = Fleet({"A": 0.0, "B": 0.0, "C": AHEAD_US / S - 15, "D": -90.0})
    for _ in range(200):
        assert fleet.batch(1, late_s={"B": 5.0}) == {}


def test_the_state_restores_and_a_bad_one_changes_nothing() -> None:
    t = ClockTracker()
    t.offsets = {"VAN-1": TEN_MIN, "VAN-2": -TEN_MIN}
    u = ClockTracker()
    assert u.restore(t.state()) == 2 and u.offsets == t.offsets
    for bad in ({}, {"offsets_us": []}, {"offsets_us": {"V": 1.5}}, {"offsets_us": {"V": 0}},
                {"offsets_us": {"V": True}}, {"offsets_us": {"V": 10**30}}):
        with pytest.raises(ValueError):
            u.restore(bad)
        assert u.offsets == t.offsets


# ---------------------------------------------------------------- the day


def the_day() -> Day:
    return make_day(FAULTS_DAY, seed=FAULTS_DAY_SEED, start_us=T0)


def skewed(day: Day, van: str, skew_us: int) -> Day:
    """The day as the van's clock, ``skew_us`` off, stamps it."""
    def shift(stream: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return [(v, dataclasses.replace(r, ts_us=r.ts_us + skew_us) if v == van else r)
                for v, r in stream]  # fmt: skip

    fixes = dict(day.fixes)
    fixes[van] = fixes[van].copy()
    fixes[van]["ts_us"] += skew_us
    return dataclasses.replace(day, fixes=fixes, cargo=shift(day.cargo),
                               sensors=shift(day.sensors), pods=shift(day.pods))  # fmt: skip


def play(day: Day, skew: tuple[str, int] | None = None) -> tuple[Replayed, Pipeline]:
    doc = dict(day.manifest)
    doc["gates"] = gate_entries(day, {g.gate_id: f"/dev/null/{g.gate_id}" for g in day.gates})
    van, skew_us = skew or ("", 0)

    def arrival(_kind: str, vehicle: str, ts_us: NDArray[np.int64]) -> NDArray[np.int64]:
        return ts_us - skew_us if vehicle == van else ts_us  # it arrives when it happens

    fed = skewed(day, van, skew_us) if skew else day
    p = pipeline_for(parse_manifest(doc))
    return replay(p, start_us=day.start_us,
                  end_us=day.end_us + 300 * S, fixes=fed.fixes, reads=day.reads(),
                  cargo=fed.cargo, sensors=fed.sensors, pods=fed.pods, batch_s=1.0,
                  arrival=arrival), p  # fmt: skip


def lifecycle(r: Replayed) -> tuple[dict[str, Any], dict[tuple[Any, ...], list[int]]]:
    final = {row[0]: (row[2], row[3], row[4]) for row in r.rows.get("parcel_latest", [])}
    events: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for e in r.rows.get("parcel_event", []):  # (tn, status, sub, van, stop) -> times
        events[(e[2], e[3], e[4], e[5], e[6])].append(datetime_to_us(e[0]))
    return final, {k: sorted(v) for k, v in events.items()}


def windows(r: Replayed) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per parcel, every ETA window written: (time, eta, earliest, latest)."""
    out: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for columns in r.rows.get("eta_snapshot", []):
        for t, tn, eta, lo, hi, _c in zip(*columns, strict=True):
            out[tn].append(tuple(datetime_to_us(x) for x in (t, eta, lo, hi)))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def reference() -> Replayed:
    return play(the_day())[0]


@pytest.mark.parametrize(("van", "skew_s"), [
    ("VAN-001", 600), ("VAN-002", -600), ("VAN-003", 600), ("VAN-003", -600)])  # fmt: skip
def test_a_van_clock_ten_minutes_off_changes_no_parcel(reference: Replayed, van: str,
                                                       skew_s: int) -> None:  # fmt: skip
    got, p = play(the_day(), (van, skew_s * S))
    assert p.clocks.offsets == {van: skew_s * S}
    (want_final, want_events), (got_final, got_events) = lifecycle(reference), lifecycle(got)
    assert got_final == want_final
    assert got_events.keys() == want_events.keys()
    # a van behind looks late until its clock is confirmed (CONFIRM_US of its time), and
    # its data is held back meanwhile (ingest/hold.py): its events come at their times,
    # corrected; only what is known first when its data goes (the late promises of the
    # day, when it is the first to report) and its ETA windows are as much later
    held_until = the_day().start_us + MAX_US + ETA_EVERY_US
    for key, times in want_events.items():
        assert len(got_events[key]) == len(times)
        for a, b in zip(got_events[key], times, strict=True):
            assert abs(a - b) <= 2 * S or (skew_s < 0 and b < a <= held_until), key
    # ETAs: the window a customer reads at each minute of the day, within a minute
    want_w, got_w = windows(reference), windows(got)
    assert want_w.keys() == got_w.keys()
    errors = []
    for tn, ws in want_w.items():
        gs = got_w[tn]
        for minute in range(ws[0][0], ws[-1][0], 60 * S):
            if skew_s < 0 and minute <= held_until:
                continue
            w = max((x for x in ws if x[0] <= minute), default=None)
            g = max((x for x in gs if x[0] <= minute), default=None)
            if w is not None and g is not None:
                errors.append(max(abs(a - b) for a, b in zip(w[1:], g[1:], strict=True)))
    assert len(errors) > 100
    assert np.percentile(errors, 99) <= 60 * S, np.percentile(errors, [50, 95, 99, 100]) / S
