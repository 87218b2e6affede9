"""Binding passes to vans: the track buffer against a scalar loop, and the binding rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geo.fences import FenceSet
from geo.matching import (
    AT_DOCK,
    BOUND,
    NEAR_DOCK,
    NO_VAN,
    SEVERAL_VANS,
    TAGGED,
    TrackBuffer,
    match_passes,
)

S = 1_000_000
T0 = 1_795_504_502_000_000
LON0, LAT0 = 13.4050, 52.5200
M_PER_DEG_LAT = 111_195.0  # close to the haversine's, enough for metres at a dock


def east(m: float) -> float:
    return LON0 + m / (M_PER_DEG_LAT * math.cos(math.radians(LAT0)))


def point(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat]}


FENCES = FenceSet.from_stops(["DOCK-1", "DOCK-2"], ["dock", "dock"],
                             [point(LON0, LAT0), point(east(60), LAT0)], [8.0, 8.0])  # fmt: skip


def scalar_position(fixes: list[tuple[int, int, float, float]], v: int, t: int,
                    max_gap: int, hold: int) -> tuple[float, float]:  # fmt: skip
    """The module docstring's rule, one query at a time."""
    mine = sorted((f for f in fixes if f[0] == v), key=lambda f: f[1])
    before = [f for f in mine if f[1] <= t]
    after = [f for f in mine if f[1] >= t]
    p = before[-1] if before else None
    n = after[0] if after else None
    if p is not None and n is not None and n[1] - p[1] <= max_gap:
        w = (t - p[1]) / max(n[1] - p[1], 1)
        return p[2] + w * (n[2] - p[2]), p[3] + w * (n[3] - p[3])
    if p is not None and t - p[1] <= hold:
        return p[2], p[3]
    if n is not None and n[1] - t <= hold:
        return n[2], n[3]
    return math.nan, math.nan


@pytest.mark.parametrize("seed", range(5))
def test_position_at_agrees_with_a_scalar_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    v = rng.integers(0, 4, n)
    t = T0 + rng.integers(0, 20 * 60, n) * S  # some gaps over 120 s, some repeats
    lon, lat = rng.uniform(13.0, 13.1, n), rng.uniform(52.0, 52.1, n)
    buf = TrackBuffer(horizon_us=10**15)
    ids = ["A", "B", "C", "D"]
    for part in np.array_split(np.arange(n), 4):  # in several batches, unsorted
        buf.extend(v[part], ids, t[part], lon[part], lat[part])
    # one fix per vehicle and instant: the first one given wins
    fixes: dict[tuple[int, int], tuple[int, int, float, float]] = {}
    for i in range(n):
        fixes.setdefault((int(v[i]), int(t[i])),
                         (int(v[i]), int(t[i]), float(lon[i]), float(lat[i])))  # fmt: skip
    qv = rng.integers(0, 4, 200)
    qt = T0 + rng.integers(-120, 22 * 60, 200) * S + rng.integers(0, S, 200)
    got_lon, got_lat = buf.position_at(buf.code_of([ids[k] for k in qv]), qt)
    for k in range(200):
        code = int(buf.code_of([ids[int(qv[k])]])[0])
        want = scalar_position([(int(buf.code_of([ids[f[0]]])[0]), *f[1:]) for f in fixes.values()],
                               code, int(qt[k]), buf.max_gap_us, buf.hold_us)  # fmt: skip
        if math.isnan(want[0]):
            assert math.isnan(got_lon[k]) and math.isnan(got_lat[k])
        else:
            assert got_lon[k] == pytest.approx(want[0], abs=1e-12)
            assert got_lat[k] == pytest.approx(want[1], abs=1e-12)


def test_the_buffer_forgets_fixes_older_than_its_horizon() -> None:
    buf = TrackBuffer(horizon_us=60 * S)
    buf.extend([0, 0], ["A"], [T0, T0 + 30 * S], [LON0, LON0], [LAT0, LAT0])
    buf.extend([0], ["A"], [T0 + 100 * S], [LON0], [LAT0])
    assert len(buf) == 1
    lon, _ = buf.position_at([0], [T0])
    assert math.isnan(lon[0])


def test_a_backlog_keeps_its_own_fixes_until_the_next_extend() -> None:
    """A van back online flushes 20 minutes at once: the batch's proofs and passes need
    the backlog's first minutes too; the next batch trims them."""
    buf = TrackBuffer(horizon_us=60 * S)
    ts = T0 + np.arange(0, 1200, 10) * S
    buf.extend(np.zeros(len(ts), np.intp), ["A"], ts[::-1], np.full(len(ts), LON0),
               np.full(len(ts), LAT0))  # fmt: skip
    assert len(buf) == len(ts)
    lon, _ = buf.position_at([0], [T0 + 5 * S])
    assert lon[0] == pytest.approx(LON0)
    buf.extend([0], ["A"], [T0 + 1200 * S], [LON0], [LAT0])
    assert len(buf) == 7  # 1140 s .. 1200 s
    lon, _ = buf.position_at([0], [T0 + 5 * S])
    assert math.isnan(lon[0])


def van_at(buf: TrackBuffer, vid: str, east_m: float, t0: int = T0) -> None:
    """A van parked ``east_m`` east of DOCK-1 for two minutes around t0, a fix every 10 s."""
    ts = t0 + np.arange(-60, 61, 10) * S
    buf.extend(np.zeros(len(ts), np.intp), [vid], ts, np.full(len(ts), east(east_m)),
               np.full(len(ts), LAT0))  # fmt: skip


def test_one_van_at_the_dock_binds_and_others_elsewhere_do_not_count() -> None:
    buf = TrackBuffer()
    van_at(buf, "VAN-1", 2.0)
    van_at(buf, "VAN-2", 60.0)  # at DOCK-2
    van_at(buf, "VAN-3", 500.0)
    m = match_passes(buf, FENCES, [0, 1], [T0, T0 + S], [T0 + 2 * S, T0 + 3 * S])
    assert m.outcome.tolist() == [BOUND, BOUND]
    assert [buf.vehicle_ids[i] for i in m.vehicle] == ["VAN-1", "VAN-2"]
    assert m.evidence.tolist() == [AT_DOCK, AT_DOCK]
    assert m.confidence.tolist() == [0.6, 0.6]


def test_no_van_and_two_vans_are_exceptions_not_guesses() -> None:
    buf = TrackBuffer()
    van_at(buf, "VAN-1", 1.0)
    van_at(buf, "VAN-2", -2.0)
    m = match_passes(buf, FENCES, [0, 1], [T0, T0], [T0 + S, T0 + S])
    assert m.outcome.tolist() == [SEVERAL_VANS, NO_VAN]
    assert m.vehicle.tolist() == [-1, -1] and m.candidates.tolist() == [2, 0]
    # a pass long after the vans' last fixes: nobody is known to be there
    late = match_passes(buf, FENCES, [0], [T0 + 600 * S], [T0 + 601 * S])
    assert late.outcome.tolist() == [NO_VAN]


def test_the_vans_own_tag_picks_one_of_two_and_raises_confidence() -> None:
    buf = TrackBuffer()
    van_at(buf, "VAN-1", 1.0)
    van_at(buf, "VAN-2", -2.0)
    m = match_passes(buf, FENCES, [0], [T0], [T0 + S], pass_gate=[7], tag_gate=[7, 8],
                     tag_vehicle=[1, 0], tag_from_us=[T0 - 50 * S, T0],
                     tag_to_us=[T0 - 40 * S, T0 + S])  # fmt: skip
    assert m.outcome.tolist() == [BOUND] and buf.vehicle_ids[int(m.vehicle[0])] == "VAN-2"
    assert m.evidence.tolist() == [AT_DOCK | TAGGED] and m.confidence[0] == pytest.approx(0.9)
    # the tag read at another gate, or too long before, proves nothing
    m = match_passes(buf, FENCES, [0], [T0], [T0 + S], pass_gate=[7], tag_gate=[8, 7],
                     tag_vehicle=[1, 1], tag_from_us=[T0, T0 - 200 * S],
                     tag_to_us=[T0, T0 - 100 * S])  # fmt: skip
    assert m.outcome.tolist() == [SEVERAL_VANS]


def test_near_the_dock_binds_with_less_confidence_and_a_tag_alone_binds() -> None:
    buf = TrackBuffer()
    van_at(buf, "VAN-1", 15.0)  # outside the 8 m dock, inside its 15 m margin
    van_at(buf, "VAN-2", 5000.0, t0=T0 - 3600 * S)  # no fix near the pass
    m = match_passes(buf, FENCES, [0], [T0], [T0 + S])
    assert m.outcome.tolist() == [BOUND] and m.evidence.tolist() == [NEAR_DOCK]
    assert m.confidence[0] == pytest.approx(0.4)
    # VAN-2's tag at the gate, nobody positioned at DOCK-2: the gate saw it
    m = match_passes(buf, FENCES, [1], [T0], [T0 + S], pass_gate=[3], tag_gate=[3],
                     tag_vehicle=[1], tag_from_us=[T0], tag_to_us=[T0 + S])  # fmt: skip
    assert m.outcome.tolist() == [BOUND] and buf.vehicle_ids[int(m.vehicle[0])] == "VAN-2"
    assert m.evidence.tolist() == [TAGGED] and m.confidence[0] == pytest.approx(0.5)


def test_empty_inputs_and_bad_lengths() -> None:
    buf = TrackBuffer()
    m = match_passes(buf, FENCES, [0], [T0], [T0])
    assert m.outcome.tolist() == [NO_VAN]
    assert len(match_passes(buf, FENCES, [], [], [])) == 0
    with pytest.raises(ValueError):
        match_passes(buf, FENCES, [0, 1], [T0], [T0])
    with pytest.raises(ValueError):
        TrackBuffer(horizon_us=0)
