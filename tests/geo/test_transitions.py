"""TransitionTracker: scenarios, batch-boundary invariance, and a scalar reference.

The reference below is a plain Python loop, one fix and one fence at a time, written
from the rules in the module docstring of geo/transitions.py (not from its code). It
takes fence geometry (membership, segment crossings) from FenceSet, whose queries
tests/geo/test_fences.py checks against scalar loops of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.fences import FenceSet
from geo.transitions import Events, TransitionTracker
from tests.geo.test_fences import LAT0, LON0, M_PER_DEG, at, box, point, polygon

T0 = 1_795_504_502_000_000  # event time, epoch µs
S = 1_000_000
COS0 = math.cos(math.radians(LAT0))

Fix = tuple[str, int, float, float]  # vehicle_id, ts_us, lon, lat
Event = tuple[str, str, str, int, float | None]  # vehicle, stop, kind, ts_us, dwell_s


def make_fences(margin_m: float = 15.0, extra: bool = False) -> FenceSet:
    stops: list[tuple[str, str, dict[str, Any], float | None]] = [
        ("S-1", "delivery", point(0, 0), 40.0),
        ("S-2", "delivery", polygon(box(-30, 270, 30, 330)), None),
        ("HUB", "hub", polygon(box(-1000, -300, -600, 300)), None),
        ("DOCK", "dock", point(-700, 0), 25.0),
    ]
    if extra:
        stops += [
            ("S-3", "delivery", point(400, 0), 30.0),
            ("S-4", "delivery", polygon([(300, 200), (450, 200), (450, 260), (360, 260),
                                         (360, 380), (300, 380)]), None),
            ("S-5", "delivery", point(150, -250), 50.0),
            ("S-6", "delivery", point(180, -220), 35.0),  # overlaps S-5
        ]
    return FenceSet.from_stops([s[0] for s in stops], [s[1] for s in stops],
                               [s[2] for s in stops], [s[3] for s in stops], margin_m=margin_m)


def lonlat(x_m: np.ndarray[Any, Any], y_m: np.ndarray[Any, Any]
           ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return LON0 + x_m / (M_PER_DEG * COS0), LAT0 + y_m / M_PER_DEG


def track(vehicle: str, t_s: Sequence[float] | np.ndarray[Any, Any],
          x_m: Sequence[float] | np.ndarray[Any, Any],
          y_m: Sequence[float] | np.ndarray[Any, Any]) -> list[Fix]:
    lon, lat = lonlat(np.asarray(x_m, float), np.asarray(y_m, float))
    return [(vehicle, T0 + round(t * S), float(a), float(b))
            for t, a, b in zip(t_s, lon, lat, strict=True)]


def feed(tracker: TransitionTracker, fixes: Sequence[Fix], cuts: Sequence[int] = (),
         shuffle: np.random.Generator | None = None) -> Events:
    out = []
    for a, b in pairwise([0, *sorted(cuts), len(fixes)]):
        batch = list(fixes[a:b])
        if shuffle is not None:
            batch = [batch[i] for i in shuffle.permutation(len(batch))]
        if not batch:
            continue
        names = sorted({f[0] for f in batch})
        code = {v: i for i, v in enumerate(names)}
        out.append(tracker.update(
            np.array([code[f[0]] for f in batch], np.int32), names,
            np.array([f[1] for f in batch], np.int64),
            np.array([f[2] for f in batch], float), np.array([f[3] for f in batch], float)))
    return Events.concat(out)


def rows(e: Events) -> list[Event]:
    return sorted(
        (str(v), str(s), str(k), int(t), None if math.isnan(d) else round(float(d), 6))
        for v, s, k, t, d in zip(e.vehicle_id, e.stop_id, e.kind, e.ts_us, e.dwell_s,
                                 strict=True))


# ------------------------------------------------------------------ the scalar reference


@dataclass
class PairState:
    inside: bool = False
    run: int = 0
    run_t0: int = 0
    run_virtual: bool = False
    t_enter: int = 0
    last_member: int = 0
    outside: int = 0
    dwell_done: bool = False
    events: list[Event] = field(default_factory=list)


def reference(fences: FenceSet, fixes: Sequence[Fix], *, min_fixes: int = 2,
              min_dwell_s: float = 20.0, dwell_s: float = 60.0, sparse_gap_s: float = 30.0,
              max_gap_s: float = 300.0) -> list[Event]:
    """The rules of geo/transitions.py, one vehicle, fix and fence at a time."""
    min_dwell, dwell = round(min_dwell_s * S), round(dwell_s * S)
    by_vehicle: dict[str, list[tuple[int, float, float]]] = {}
    for v, t, lon, lat in fixes:
        by_vehicle.setdefault(v, []).append((t, lon, lat))
    out: list[Event] = []
    for v, seq in by_vehicle.items():
        seq.sort(key=lambda f: f[0])  # stable: a repeated time keeps the first
        state = [PairState() for _ in range(len(fences))]

        def step(f: int, t: int, is_in: bool, member: bool, virtual: bool,
                 v: str = v, state: list[PairState] = state) -> None:
            s = state[f]
            stop = str(fences.stop_ids[f])
            if not s.inside:
                if is_in:
                    if s.run == 0:
                        s.run_t0, s.run_virtual = t, False
                    s.run += 1
                    s.run_virtual |= virtual
                    if s.run >= min_fixes or t - s.run_t0 >= min_dwell or s.run_virtual:
                        s.inside, s.t_enter, s.dwell_done, s.outside = True, s.run_t0, False, 0
                        out.append((v, stop, "enter", s.run_t0, None))
                else:
                    s.run = 0
            if s.inside:
                if member:
                    s.outside, s.last_member = 0, t
                    if not s.dwell_done and t - s.t_enter >= dwell:
                        s.dwell_done = True
                        out.append((v, stop, "dwell", t, round((t - s.t_enter) / S, 6)))
                else:
                    s.outside += 1
                    if s.outside >= min_fixes:
                        out.append((v, stop, "exit", s.last_member,
                                    round((s.last_member - s.t_enter) / S, 6)))
                        s.inside, s.run = False, 0

        prev: tuple[int, float, float] | None = None
        for t, lon, lat in seq:
            if not (math.isfinite(lon) and math.isfinite(lat)):
                continue
            if prev is not None and t <= prev[0]:
                continue
            if prev is not None and sparse_gap_s * S < t - prev[0] <= max_gap_s * S:
                dt = t - prev[0]
                _, fs, first, last = fences.crossings([prev[1]], [prev[2]], [lon], [lat])
                virtual = []
                for f, a, b in zip(fs.tolist(), first.tolist(), last.tolist(), strict=True):
                    for frac, end in ((a, prev), (b, (t, lon, lat))):
                        if not fences.contains(end[1], end[2], f)[0]:
                            vt = min(max(prev[0] + int(np.rint(frac * dt)), prev[0]), t)
                            virtual.append((vt, f))
                for vt, f in sorted(virtual):
                    step(f, vt, True, True, True)
            for f in range(len(fences)):
                step(f, t, bool(fences.contains(lon, lat, f)[0]),
                     bool(fences.contains(lon, lat, f, exit=True)[0]), False)
            prev = (t, lon, lat)
    return sorted(out)


# ------------------------------------------------------------------ scenarios


def visit(vehicle: str = "VAN-1", stop_s: float = 180.0, dt_s: float = 2.0,
          seed: int = 0) -> list[Fix]:
    """Drive east along y = 0 at 10 m/s from x = -300 m to the centre of S-1, stop there
    (2 m GPS noise), then drive on east to x = +300 m."""
    rng = np.random.default_rng(seed)
    t_in = np.arange(0, 30, dt_s)
    t_stop = np.arange(30, 30 + stop_s, dt_s)
    t_out = np.arange(30 + stop_s, 60 + stop_s + dt_s / 2, dt_s)
    t = np.concatenate([t_in, t_stop, t_out])
    x = np.concatenate([-300 + 10 * t_in, rng.normal(0, 2, len(t_stop)),
                        10 * (t_out - 30 - stop_s)])
    y = np.concatenate([np.zeros(len(t_in)), rng.normal(0, 2, len(t_stop)),
                        np.zeros(len(t_out))])
    return track(vehicle, t, x, y)


def test_a_van_stops_three_minutes_enter_dwell_exit() -> None:
    fences = make_fences()
    fixes = visit()
    tracker = TransitionTracker(fences)
    ev = feed(tracker, fixes)
    assert ev.kind.tolist() == ["enter", "dwell", "exit"]
    assert set(ev.stop_id.tolist()) == {"S-1"} and set(ev.vehicle_id.tolist()) == {"VAN-1"}
    enter, dwell, exit_ = (int(t) for t in ev.ts_us)
    interval = 2 * S
    # the van reaches the edge (x = -40 m) at t = 26 s and leaves it (x = +40 m) at 214 s
    assert abs(enter - (T0 + 26 * S)) <= interval
    assert abs(dwell - (enter + 60 * S)) <= interval and ev.dwell_s[1] >= 60.0
    assert abs(exit_ - (T0 + 214 * S)) <= interval
    assert ev.dwell_s[2] == pytest.approx((exit_ - enter) / S)
    assert math.isnan(ev.dwell_s[0])
    assert rows(ev) == reference(fences, fixes)
    assert tracker.inside() == {"VAN-1": None}
    assert tracker.state_size == 0


def test_inside_reports_the_current_stop_the_innermost_when_nested() -> None:
    fences = make_fences()
    tracker = TransitionTracker(fences)
    # into the hub, then parked at its dock
    fixes = track("VAN-7", range(0, 120, 5), np.linspace(-1100, -700, 24), np.zeros(24))
    fixes += track("VAN-8", [0, 5, 10], [0, 1, 2], [0, 0, 0])
    ev = feed(tracker, fixes)
    assert sorted(zip(ev.stop_id.tolist(), ev.kind.tolist(), strict=True)) == [
        ("DOCK", "enter"), ("HUB", "dwell"), ("HUB", "enter"), ("S-1", "enter")]
    assert tracker.inside() == {"VAN-7": "DOCK", "VAN-8": "S-1"}


def test_gps_drift_at_the_boundary_fires_at_most_one_pair() -> None:
    fences = make_fences()
    rng = np.random.default_rng(11)
    # arrive from the west, then 5 minutes parked exactly on the edge of S-1 (x = -40 m)
    # with 5 m of noise per axis, one fix a second, then drive away west
    t1 = np.arange(0, 20, 1.0)
    t2 = np.arange(20, 320, 1.0)
    t3 = np.arange(320, 360, 1.0)
    x = np.concatenate([-240 + 10 * t1, -40 + rng.normal(0, 5, len(t2)),
                        -40 - 10 * (t3 - 319)])
    y = np.concatenate([np.zeros(len(t1)), rng.normal(0, 5, len(t2)), np.zeros(len(t3))])
    fixes = track("VAN-2", np.concatenate([t1, t2, t3]), x, y)
    inside = fences.contains(np.array([f[2] for f in fixes]), np.array([f[3] for f in fixes]), 0)
    flips = int(np.count_nonzero(np.diff(inside.astype(int))))
    assert flips > 50  # the fixes do cross the edge back and forth
    ev = feed(TransitionTracker(fences), fixes)
    assert ev.kind.tolist().count("enter") <= 1 and ev.kind.tolist().count("exit") <= 1
    assert ev.kind.tolist() in (["enter", "dwell", "exit"], [])
    assert rows(ev) == reference(fences, fixes)


def test_a_drive_by_with_one_fix_inside_fires_nothing() -> None:
    fences = make_fences()
    # along y = 35 m, one fix every 5 s at 10 m/s: only x = 0 is inside S-1
    t = np.arange(0, 60, 5.0)
    fixes = track("VAN-3", t, -300 + 10 * t, np.full(len(t), 35.0))
    inside = fences.contains(np.array([f[2] for f in fixes]), np.array([f[3] for f in fixes]), 0)
    assert inside.sum() == 1
    tracker = TransitionTracker(fences)
    assert len(feed(tracker, fixes)) == 0
    assert tracker.inside() == {"VAN-3": None} and tracker.state_size == 0


def test_sparse_fixes_straight_through_a_stop_are_a_crossing() -> None:
    fences = make_fences()
    # one fix a minute at 10 m/s along y = 0: x = -330, +270, +870; none inside S-1
    fixes = track("VAN-4", [0, 60, 120], [-330, 270, 870], [0, 0, 0])
    lon = np.array([f[2] for f in fixes])
    lat = np.array([f[3] for f in fixes])
    assert not fences.contains(lon, lat, 0).any()
    ev = feed(TransitionTracker(fences), fixes)
    assert ev.kind.tolist() == ["enter", "exit"] and set(ev.stop_id.tolist()) == {"S-1"}
    # the edge is crossed at x = -40 m (t = 29 s) and x = +40 m (t = 37 s)
    assert abs(int(ev.ts_us[0]) - (T0 + 29 * S)) < S // 10
    assert abs(int(ev.ts_us[1]) - (T0 + 37 * S)) < S // 10
    assert ev.dwell_s[1] == pytest.approx(8.0, abs=0.2)
    assert rows(ev) == reference(fences, fixes)


def test_one_sparse_fix_inside_is_a_visit_from_edge_to_edge() -> None:
    fences = make_fences()
    fixes = track("VAN-5", [0, 60, 120, 180], [-590, 10, 610, 1210], [0, 0, 0, 0])
    ev = feed(TransitionTracker(fences), fixes)
    assert ev.kind.tolist() == ["enter", "exit"]
    assert abs(int(ev.ts_us[0]) - (T0 + 55 * S)) < S // 10  # x = -40 m
    assert abs(int(ev.ts_us[1]) - (T0 + 63 * S)) < S // 10  # x = +40 m
    assert rows(ev) == reference(fences, fixes)


def test_long_outages_are_not_interpolated() -> None:
    fences = make_fences()
    fixes = track("VAN-6", [0, 600, 1200], [-3000, 3000, 9000], [0, 0, 0])
    assert len(feed(TransitionTracker(fences), fixes)) == 0


def test_a_single_fix_outside_does_not_end_a_visit() -> None:
    fences = make_fences()
    t = np.arange(0, 200, 5.0)
    x = np.zeros(len(t))
    x[20] = 100.0  # one GPS jump 60 m past the edge and the margin
    fixes = track("VAN-1", t, x, np.zeros(len(t)))
    tracker = TransitionTracker(fences)
    ev = feed(tracker, fixes)
    assert ev.kind.tolist() == ["enter", "dwell"]
    assert tracker.inside() == {"VAN-1": "S-1"}


def test_late_duplicate_and_missing_fixes_are_ignored() -> None:
    fences = make_fences()
    fixes = visit(dt_s=5.0)
    tracker = TransitionTracker(fences)
    first = feed(tracker, fixes[:30])
    late = [fixes[3], fixes[29], ("VAN-1", fixes[29][1] + S, math.nan, 52.0)]
    assert len(feed(tracker, late)) == 0
    assert tracker.ignored_fixes == 2  # the NaN fix is dropped, not counted as late
    rest = feed(tracker, [*fixes[30:], fixes[-1]])  # a duplicate at the end
    assert tracker.ignored_fixes == 3
    assert rows(Events.concat([first, rest])) == rows(feed(TransitionTracker(fences), fixes))


def test_set_fences_keeps_the_state_of_surviving_stops() -> None:
    fences = make_fences()
    fixes = visit(dt_s=5.0)
    tracker = TransitionTracker(fences)
    before = feed(tracker, fixes[:15])  # inside S-1, entered, no dwell yet
    assert before.kind.tolist() == ["enter"]
    # reload: S-1 survives at a new index, S-2 disappears, S-9 is new
    reloaded = FenceSet.from_stops(
        ["S-9", "HUB", "S-1"], ["delivery", "hub", "delivery"],
        [point(5000, 0), polygon(box(-1000, -300, -600, 300)), point(0, 0)],
        [30.0, None, 40.0])
    tracker.set_fences(reloaded)
    assert tracker.fences is reloaded
    assert tracker.inside() == {"VAN-1": "S-1"}
    after = feed(tracker, fixes[15:])
    assert after.kind.tolist() == ["dwell", "exit"] and set(after.stop_id.tolist()) == {"S-1"}
    assert rows(Events.concat([before, after])) == rows(feed(TransitionTracker(fences), fixes))
    # a stop that disappears takes its state with it
    tracker2 = TransitionTracker(fences)
    feed(tracker2, fixes[:15])
    tracker2.set_fences(FenceSet.from_stops(["S-2"], ["delivery"],
                                            [polygon(box(-30, 270, 30, 330))], [None]))
    assert tracker2.inside() == {"VAN-1": None} and tracker2.state_size == 0


def test_bad_arguments() -> None:
    fences = make_fences()
    with pytest.raises(ValueError):
        TransitionTracker(fences, min_fixes=0)
    with pytest.raises(ValueError):
        TransitionTracker(fences, min_dwell_s=90.0, dwell_s=60.0)
    tracker = TransitionTracker(fences)
    with pytest.raises(ValueError):
        tracker.update(np.array([1], np.int32), ["VAN-1"], np.array([T0]), [0.0], [0.0])
    with pytest.raises(ValueError):
        tracker.update(np.array([0, 0], np.int32), ["VAN-1"], np.array([T0]), [0.0], [0.0])
    assert len(tracker.update(np.empty(0, np.int32), [], np.empty(0, np.int64),
                              np.empty(0), np.empty(0))) == 0
    empty = TransitionTracker(FenceSet.empty())
    assert len(feed(empty, visit())) == 0 and empty.inside() == {"VAN-1": None}


# ------------------------------------------------------------------ random walks


def random_walks(seed: int, vans: int = 6, legs: int = 14) -> list[Fix]:
    """Seeded vans driving between stops and random points, pausing at some, reporting
    every 1 to 90 s (a rate per leg, so gaps are sometimes sparse), with GPS noise,
    the odd NaN fix and the odd fix delivered twice; in time order per van, vans
    interleaved."""
    rng = np.random.default_rng(seed)
    targets = np.array([(0, 0), (0, 300), (-700, 0), (-800, 200), (400, 0), (380, 290),
                        (150, -250), (180, -220), (40, 0), (0, 330)], float)
    out: list[Fix] = []
    for v in range(vans):
        vehicle = f"VAN-{v:02d}"
        pos = rng.uniform(-900, 500, 2)
        t = float(rng.uniform(0, 60))
        for _ in range(legs):
            goal = (targets[rng.integers(len(targets))] + rng.normal(0, 25, 2)
                    if rng.random() < 0.8 else rng.uniform(-900, 500, 2))
            speed = rng.uniform(4, 14)
            interval = float(rng.choice([1, 2, 5, 10, 20, 45, 60, 90]))
            dist = float(np.hypot(*(goal - pos)))
            steps = max(1, int(dist / speed / interval))
            for k in range(1, steps + 1):
                t += interval * rng.uniform(0.8, 1.2)
                p = pos + (goal - pos) * k / steps + rng.normal(0, 4, 2)
                out.append((vehicle, T0 + round(t * S), *at(float(p[0]), float(p[1]))))
            pos = goal
            pause = float(rng.choice([0, 0, 15, 40, 90, 200]))
            interval = float(rng.choice([1, 5, 10, 30]))
            stop_t = t + pause
            while t + interval <= stop_t:
                t += interval
                p = pos + rng.normal(0, 6, 2)
                out.append((vehicle, T0 + round(t * S), *at(float(p[0]), float(p[1]))))
    # the odd NaN and repeated time
    for k in rng.choice(len(out), len(out) // 50, replace=False):
        v_, t_, a, b = out[k]
        out[k] = (v_, t_, math.nan, b) if rng.random() < 0.5 else out[k]
        out.insert(int(k) + 1, (v_, t_, a, b))  # delivered twice (or the NaN's repair)
    out.sort(key=lambda f: f[1])  # vans interleaved by time; stable for repeated times
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorized_equals_the_scalar_reference_on_random_walks(seed: int) -> None:
    fences = make_fences(extra=True)
    fixes = random_walks(seed)
    rng = np.random.default_rng(seed)
    cuts = rng.choice(len(fixes), 7, replace=False).tolist()
    got = rows(feed(TransitionTracker(fences), fixes, cuts, shuffle=rng))
    want = reference(fences, fixes)
    assert got == want
    kinds = [e[2] for e in want]
    assert kinds.count("enter") >= 10 and kinds.count("dwell") >= 3 and kinds.count("exit") >= 5


@pytest.mark.parametrize(("seed", "params"), [
    (10, {"min_fixes": 3, "min_dwell_s": 10.0, "dwell_s": 30.0}),
    (11, {"min_fixes": 1, "min_dwell_s": 0.0, "dwell_s": 45.0, "sparse_gap_s": 15.0}),
    (12, {"min_fixes": 4, "min_dwell_s": 60.0, "dwell_s": 60.0, "max_gap_s": 100.0}),
])
def test_other_parameters_against_the_reference(seed: int, params: dict[str, Any]) -> None:
    fences = make_fences(margin_m=8.0, extra=True)
    fixes = random_walks(seed)
    rng = np.random.default_rng(seed)
    got = rows(feed(TransitionTracker(fences, **params), fixes,
                    rng.choice(len(fixes), 5, replace=False).tolist()))
    assert got == reference(fences, fixes, **params)
    assert len(got) > 10


FENCES = make_fences(extra=True)
WALKS = {seed: random_walks(seed, vans=4, legs=8) for seed in range(3)}
WHOLE = {seed: rows(feed(TransitionTracker(FENCES), WALKS[seed])) for seed in WALKS}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(WALKS)), st.lists(st.integers(0, 10_000), max_size=12),
       st.integers(0, 2**32 - 1))
def test_batch_boundaries_do_not_matter(seed: int, cuts: list[int], shuffle: int) -> None:
    fixes = WALKS[seed]
    cuts = sorted({c % (len(fixes) + 1) for c in cuts})
    got = rows(feed(TransitionTracker(FENCES), fixes, cuts,
                    shuffle=np.random.default_rng(shuffle)))
    assert got == WHOLE[seed]


def restarted(tracker: TransitionTracker, fixes: Sequence[Fix]) -> TransitionTracker:
    """A fresh tracker that goes on from ``tracker``'s snapshot, through JSON, with each
    vehicle's newest fix as ``vehicle_latest`` would have it."""
    last: dict[str, tuple[int, float, float]] = {}
    for vehicle, ts, lon, lat in fixes:  # the newest usable one (the first of equal times)
        if math.isfinite(lon) and (vehicle not in last or ts > last[vehicle][0]):
            last[vehicle] = (ts, lon, lat)
    fresh = TransitionTracker(tracker.fences)
    fresh.restore(orjson.loads(orjson.dumps(tracker.snapshot())), last)
    return fresh


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(WALKS)), st.lists(st.integers(0, 10_000), min_size=1,
                                                max_size=4), st.integers(0, 10_000))  # fmt: skip
def test_a_restart_from_the_snapshot_changes_no_event(seed: int, restarts: list[int],
                                                      cut: int) -> None:  # fmt: skip
    """ingest_state (docs/lifecycle.md): a crash between two batches, the tracker built
    again from its snapshot, gives the events of the run without the crash."""
    fixes = WALKS[seed]
    points = sorted({r % (len(fixes) + 1) for r in restarts} | {cut % (len(fixes) + 1)})
    tracker = TransitionTracker(FENCES)
    got: list[Event] = []
    for a, b in pairwise([0, *points, len(fixes)]):
        got += rows(feed(tracker, fixes[a:b]))
        tracker = restarted(tracker, fixes[:b])
    assert sorted(got) == WHOLE[seed]


def test_the_snapshot_changes_with_a_visit_not_with_every_fix() -> None:
    fences = make_fences()
    stay = track("VAN-1", np.arange(0, 300, 5), np.zeros(60), np.zeros(60))  # 5 min at S-1
    tracker = TransitionTracker(fences)
    snapshots = []
    for fix in stay:
        feed(tracker, [fix])
        snapshots.append(orjson.dumps(tracker.snapshot()))
    # a run, ENTER, DWELL: three changes while parked
    assert 2 <= len(set(snapshots)) <= 4
    assert tracker.inside() == {"VAN-1": "S-1"}


@pytest.mark.parametrize(("snapshot", "match"), [
    ({"v": 99, "pairs": []}, "version"),
    (["v", 1], "version"),
    ("x", "version"),
    ({"v": 1, "pairs": [["VAN-1", "S-1", 300, 0, 0, 0, None, False, 0]]}, "state"),
    ({"v": 1, "pairs": [["VAN-1", "S-1", 2, 0]]}, "9 fields"),
])  # fmt: skip
def test_a_bad_snapshot_is_refused_and_changes_nothing(snapshot: Any, match: str) -> None:
    tracker = TransitionTracker(make_fences())
    feed(tracker, track("VAN-1", [0, 5, 10], [0, 0, 0], [0, 0, 0]))
    before = orjson.dumps(tracker.snapshot())
    with pytest.raises(ValueError, match=match):
        tracker.restore(snapshot, {"VAN-1": (T0, LON0, LAT0)})
    assert orjson.dumps(tracker.snapshot()) == before


def test_one_fix_per_batch_equals_one_batch() -> None:
    fixes = WALKS[0]
    got = rows(feed(TransitionTracker(FENCES), fixes, range(1, len(fixes))))
    assert got == WHOLE[0]
    assert len(WHOLE[0]) > 5


def test_a_repeated_time_within_a_batch_keeps_the_first_fix() -> None:
    fences = make_fences()
    inside = track("VAN-1", [0, 5, 10], [0, 0, 0], [0, 0, 0])
    far = track("VAN-1", [5], [5000], [0])
    tracker = TransitionTracker(fences)
    ev = feed(tracker, [inside[0], inside[1], far[0], inside[2]])
    assert ev.kind.tolist() == ["enter"] and tracker.ignored_fixes == 1
    tracker = TransitionTracker(fences)
    ev = feed(tracker, [inside[0], far[0], inside[1], inside[2]])
    # the far fix breaks the run; the two after it confirm it again from t = 10 s
    assert ev.kind.tolist() == [] and tracker.ignored_fixes == 1
    assert len(feed(tracker, track("VAN-1", [15], [0], [0]))) == 1
