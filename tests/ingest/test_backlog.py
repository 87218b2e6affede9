"""Late data (DESIGN.md, "Event time"): a van offline for 20 minutes that then flushes its
backlog at once and out of order leaves every parcel as if it had never been offline.

The seeded day with every planted fault (simulators.day.FAULTS_DAY) is replayed through
the pipeline in one-second batches twice: as it happens, and with everything one van
stamped inside a 20-minute window (fixes, inventories, temperatures, proofs) arriving
when the window ends, shuffled, in one batch or spread over several. The final status,
sub-status and van of every parcel, and every parcel event (status, sub-status, van,
time, stop), must agree.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from devices.records import US_PER_S
from ingest.manifest import parse_manifest
from ingest.replay import Arrival, Replayed, in_event_time, pipeline_for, replay
from simulators.day import FAULTS_DAY, FAULTS_DAY_SEED, Day, make_day

T0 = 1_795_500_000_000_000
WINDOW_S = 20 * 60


def day_from(pods: bool) -> tuple[Day, int]:
    day = make_day(FAULTS_DAY, seed=FAULTS_DAY_SEED, start_us=T0)
    if not pods:  # a day without proofs: removals alone say delivered
        day.pods = []
    return day, T0 + round((day.first_departure_s() - 60.0) * US_PER_S)


def play(day: Day, from_us: int, arrival: Arrival) -> Replayed:
    doc = {**day.manifest, "gates": []}
    end_us = max(int(a["ts_us"][-1]) for a in day.fixes.values()) + 3600 * US_PER_S
    return replay(pipeline_for(parse_manifest(doc)), start_us=day.start_us, end_us=end_us,
                  fixes={v: a[a["ts_us"] >= from_us] for v, a in day.fixes.items()},
                  cargo=[m for m in day.cargo if m[1].ts_us >= from_us],
                  sensors=[m for m in day.sensors if m[1].ts_us >= from_us],
                  pods=[m for m in day.pods if m[1].ts_us >= from_us], batch_s=1.0,
                  arrival=arrival)  # fmt: skip


def lifecycle(r: Replayed) -> tuple[dict[str, tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    final = {row[0]: (row[2], row[3], row[4]) for row in r.rows.get("parcel_latest", [])}
    events = Counter((e[2], e[3], e[4], e[5], e[0], e[6]) for e in r.rows.get("parcel_event", []))
    return final, events


class Offline:
    """The :data:`Arrival` of a van offline over [w0, w1): what it stamped then arrives
    within ``spread_s`` after w1 (half a second: one batch), in a seeded random order."""

    def __init__(self, van: str, w0_us: int, w1_us: int, seed: int,
                 spread_s: float = 0.5) -> None:  # fmt: skip
        self.van, self.w0, self.w1 = van, w0_us, w1_us
        self.spread_us = round(spread_s * US_PER_S)
        self.rng = np.random.default_rng(seed)
        self.held: Counter[str] = Counter()

    def __call__(self, kind: str, vehicle: str, ts_us: NDArray[np.int64]) -> NDArray[np.int64]:
        if vehicle != self.van:
            return ts_us
        held = (ts_us >= self.w0) & (ts_us < self.w1)
        self.held[kind] += int(held.sum())
        out = ts_us.copy()
        out[held] = self.w1 + self.rng.integers(0, self.spread_us, int(held.sum()))
        return out


@pytest.fixture(scope="module")
def references() -> dict[bool, Replayed]:
    return {pods: play(*day_from(pods), in_event_time) for pods in (True, False)}


def test_the_reference_day_reports_its_planted_faults(references: dict[bool, Replayed]) -> None:
    day, _ = day_from(True)
    events = references[True].rows["parcel_event"]
    assert {(e[2], e[4]) for e in events if e[3] == "Exception"} == day.truth.exception_pairs()
    assert {e[2] for e in events if e[3] == "AttemptFail"} == day.truth.attempts


@pytest.mark.parametrize(("van", "from_s", "pods", "spread_s"), [
    ("VAN-002", 1440, True, 0.5),  # arrivals at three stops, a failed and a signed proof
    ("VAN-002", 1440, False, 0.5),  # the same, removals alone saying delivered
    ("VAN-003", 2900, True, 0.5),
    ("VAN-003", 3600, True, 0.5),
    # spread over four batches, each out of order (held back until the flush is over)
    ("VAN-002", 1440, True, 4.0),
    ("VAN-003", 3600, True, 4.0),
])  # fmt: skip
def test_a_backlog_flushed_out_of_order_changes_no_parcel(
    references: dict[bool, Replayed], van: str, from_s: int, pods: bool, spread_s: float
) -> None:
    day, from_us = day_from(pods)
    w0 = day.start_us + from_s * US_PER_S
    w1 = w0 + WINDOW_S * US_PER_S
    stops = [s for (v, s), t in day.truth.arrivals_us.items() if v == van and w0 <= t < w1]
    assert stops, f"{van} reaches no stop in its window: the test would test nothing"
    offline = Offline(van, w0, w1, seed=from_s, spread_s=spread_s)
    got = play(day, from_us, offline)
    assert offline.held["gps"] > WINDOW_S // 2 and offline.held["cargo"] > 10  # it was offline
    (want_final, want_events), (got_final, got_events) = lifecycle(references[pods]), lifecycle(got)
    assert got_final == want_final
    assert got_events - want_events == Counter() and want_events - got_events == Counter(), (
        f"only with the backlog: {sorted((got_events - want_events).elements())};"
        f" only without: {sorted((want_events - got_events).elements())}")
