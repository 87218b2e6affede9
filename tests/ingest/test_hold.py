"""The hold for late data (ingest/hold.py): what it keeps back, when it lets go, and its
state across a restart."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from devices.fleet import CargoScan, ProofOfDelivery
from devices.records import GPS_FIX_DTYPE
from ingest.batch import FixFrame
from ingest.hold import MAX_US, QUIET_US, Admitted, BacklogHold
from ingest.parcels import PodEvidence, SensorEvidence

S = 1_000_000
T0 = 1_795_500_000_000_000


def frame(rows: list[tuple[str, int, int]]) -> FixFrame:
    """Fixes (vehicle, ts_us, received_us)."""
    vehicles = sorted({v for v, _, _ in rows})
    fix = np.zeros(len(rows), GPS_FIX_DTYPE)
    fix["ts_us"] = [t for _, t, _ in rows]
    fix["lat_deg"], fix["lon_deg"] = 52.5, 13.4
    code = np.array([vehicles.index(v) for v, _, _ in rows], np.int32)
    return FixFrame(fix, code, np.array([r for _, _, r in rows], np.int64), vehicles)


def admit(h: BacklogHold, rows: list[tuple[str, int, int]], late_vans: set[str], now_us: int,
          scans: list[tuple[str, CargoScan]] | None = None,
          pods: list[PodEvidence] | None = None) -> Admitted:  # fmt: skip
    f = frame(rows)
    late: NDArray[np.bool_] = np.array([v in late_vans for v, _, _ in rows], np.bool_)
    return h.admit(f, late, scans or [], [], pods or [], now_us)


def times(a: Admitted, van: str) -> list[int]:
    codes = [i for i, v in enumerate(a.frame.vehicles) if v == van]
    return sorted(a.frame.fix["ts_us"][np.isin(a.frame.vehicle, codes)].tolist())


def backlog(seed: int, n: int = 60) -> list[int]:
    """A van's minute of fixes from 20 minutes ago, shuffled."""
    ts = [T0 - 1200 * S + k * S for k in range(n)]
    np.random.default_rng(seed).shuffle(ts)
    return ts


def test_a_backlog_over_several_batches_goes_at_once_when_the_flush_is_over() -> None:
    h = BacklogHold()
    ts = backlog(1)
    got = []
    for k, chunk in enumerate((ts[:20], ts[20:40], ts[40:])):
        now = T0 + k * S
        a = admit(h, [("V", t, now) for t in chunk] + [("W", now, now)], {"V"}, now)
        assert times(a, "V") == [] and times(a, "W") == [now]  # the others go on at once
        got.append(a)
    assert h.vans == ["V"] and h.fixes_held() == 60
    # the van's live fixes meanwhile are held with it, and an inventory
    now = T0 + 3 * S
    scan = CargoScan(now, ("E1",))
    a = admit(h, [("V", now, now)], set(), now, scans=[("V", scan)])
    assert times(a, "V") == [] and a.scans == [] and not h.due(now + QUIET_US - 3 * S)
    assert h.due(T0 + 2 * S + QUIET_US)
    a = admit(h, [("W", T0 + 5 * S, T0 + 5 * S)], set(), T0 + 5 * S)
    assert a.released == ["V"] and times(a, "V") == sorted([*ts, now])
    assert a.scans == [("V", scan)] and times(a, "W") == [T0 + 5 * S]
    assert h.vans == [] and not h.due(T0 + 10**9)


def test_data_late_all_along_goes_every_max_us() -> None:
    """A van that is always late (its clock behind, not confirmed yet; no fleet to compare
    with): held, and let go every MAX_US."""
    h = BacklogHold()
    released, at = [], []
    for k in range(200):
        now = T0 + k * S
        a = admit(h, [("V", now - 600 * S, now)], {"V"}, now)
        released.extend(times(a, "V"))
        at.extend([k] * len(a.released))
    hold_s = MAX_US // S  # then a new hold begins with the next batch
    assert at == [hold_s, 2 * hold_s + 1]
    assert released == [T0 + k * S - 600 * S for k in range(2 * hold_s + 2)]


def test_the_state_of_a_hold_goes_on_after_a_restart() -> None:
    ts = backlog(2)
    pod = PodEvidence("V", ProofOfDelivery(T0 - 1190 * S, "TN1", "failed", reason="absent"))
    runs: list[Admitted] = []
    for restart in (False, True):
        h = BacklogHold()
        admit(h, [("V", t, T0) for t in ts[:30]], {"V"}, T0, pods=[pod])
        h.admit(frame([("V", ts[30], T0 + S)]), np.array([True]), [],
                [SensorEvidence("V", ts[30], 9.5)], [], T0 + S)  # fmt: skip
        if restart:
            doc = orjson.loads(orjson.dumps(h.state()))
            h = BacklogHold()
            assert h.restore(doc) == 1 and h.fixes_held() == 31
        runs.append(admit(h, [("V", t, T0 + 2 * S) for t in ts[31:]], {"V"}, T0 + 2 * S))
        runs.append(admit(h, [], set(), T0 + 4 * S + QUIET_US))
    for a, b in ((runs[0], runs[2]), (runs[1], runs[3])):
        assert times(a, "V") == times(b, "V") and a.pods == b.pods and a.sensor == b.sensor
    assert times(runs[1], "V") == sorted(ts) and runs[1].pods == [pod]


def test_the_state_changes_only_with_what_is_held() -> None:
    """The held row is written with a batch that changed the hold, not with every batch
    while one lasts."""
    h = BacklogHold()
    admit(h, [("V", T0 - 600 * S, T0)], {"V"}, T0)
    c = h.changes
    admit(h, [("W", T0 + S // 2, T0 + S // 2)], set(), T0 + S // 2)  # others', not due
    assert h.changes == c
    admit(h, [("V", T0 + S, T0 + S)], set(), T0 + S)  # its live fix is held
    assert h.changes == c + 1
    a = admit(h, [], set(), T0 + S + QUIET_US)
    assert a.released == ["V"] and h.changes == c + 2


@pytest.mark.parametrize("bad", [
    {"version": 2, "vans": {}},
    {"version": 1},
    {"version": 1, "vans": {"V": {"first_us": 1, "last_late_us": 0, "fixes": {}}}},
    {"version": 1, "vans": {"V": {"first_us": 1, "last_late_us": 2, "scans": [],
                                  "sensor": [], "pods": [],
                                  "fixes": {"arrays": [], "data": "not base64!"}}}},
])  # fmt: skip
def test_a_state_it_cannot_read_is_refused_and_changes_nothing(bad: dict[str, Any]) -> None:
    h = BacklogHold()
    admit(h, [("V", T0 - 600 * S, T0)], {"V"}, T0)
    before = h.state()
    with pytest.raises(ValueError):
        h.restore(bad)
    assert h.state() == before
