"""Tag reads -> gate passes: scenarios, batch-boundary invariance, and a scalar reference.

The reference below is a plain Python loop written from the rules in the module
docstring of ingest/passes.py (not from its code); the vectorized tracker, fed in
batches, must agree with it on seeded and generated data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.passes import Passes, PassTracker, Reads

T0 = 1_795_504_502_000_000  # event time, epoch µs
S = 1_000_000
GAP = 3 * S
MAX = 60 * S
# G2 is wired the other way round: antenna 1 faces the dock
ROLES: dict[tuple[str, int], str] = {
    ("G1", 1): "hall", ("G1", 2): "dock",
    ("G2", 1): "dock", ("G2", 2): "hall",
    ("G3", 1): "hall", ("G3", 2): "dock",
}
HALL_ANT = {"G1": 1, "G2": 2, "G3": 1}
DOCK_ANT = {"G1": 2, "G2": 1, "G3": 2}

Row = tuple[str, str, int, int, float]  # gate_id, epc, ts_us, antenna, rssi
Key = tuple[object, ...]


def reads_of(rows: Sequence[Row]) -> Reads:
    return Reads.of(
        [r[0] for r in rows], [r[1] for r in rows],
        np.array([r[2] for r in rows], np.int64), np.array([r[3] for r in rows], np.int16),
        np.array([r[4] for r in rows], np.float64),
    )


def carry(gate: str, epc: str, start_us: int, direction: str, *, n: int = 40,
          duration_us: int = 2 * S, seed: int = 0) -> list[Row]:
    """A parcel carried through a door: mostly the first side's antenna in the first half
    of the pass, mostly the other side's in the second half (10% strays)."""
    rng = np.random.default_rng(seed)
    first, second = ((HALL_ANT[gate], DOCK_ANT[gate]) if direction == "out"
                     else (DOCK_ANT[gate], HALL_ANT[gate]))
    ts = start_us + np.linspace(0, duration_us, n).astype(np.int64)
    stray = rng.random(n) < 0.1
    late_half = np.arange(n) >= n // 2
    ant = np.where(late_half ^ stray, second, first)
    rssi = rng.uniform(-75, -45, n).round(1)
    return [(gate, epc, int(t), int(a), float(r)) for t, a, r in zip(ts, ant, rssi, strict=True)]


def feed(tracker: PassTracker, rows: Sequence[Row], cuts: Sequence[int] = (),
         shuffle: np.random.Generator | None = None) -> Passes:
    """Feed rows in batches cut at ``cuts``; return everything, final flush included."""
    out = []
    bounds = [0, *sorted(cuts), len(rows)]
    for a, b in pairwise(bounds):
        batch = list(rows[a:b])
        if shuffle is not None:
            batch = [batch[i] for i in shuffle.permutation(len(batch))]
        if batch:
            out.append(tracker.update(reads_of(batch)))
    out.append(tracker.flush())
    return Passes.concat(out)


def table(p: Passes) -> list[Key]:
    """Passes as comparable rows (NaN peak as None, confidence rounded), sorted."""
    rows = []
    for i in range(len(p)):
        peak = float(p.peak_rssi[i])
        rows.append((
            str(p.gate_id[i]), str(p.epc[i]), int(p.first_us[i]), int(p.last_us[i]),
            int(p.reads[i]), None if math.isnan(peak) else peak, str(p.direction[i]),
            round(float(p.confidence[i]), 9), int(p.hall_reads[i]), int(p.dock_reads[i]),
            str(p.sequence[i]),
        ))
    return sorted(rows, key=repr)


def reference(rows: Sequence[Row], roles: Mapping[tuple[str, int], str],
              gap_us: int = GAP, max_us: int = MAX) -> list[Key]:
    """The grouping and direction rules, one read and one pass at a time."""
    by_key: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
    for gate, epc, ts, antenna, rssi in rows:
        by_key.setdefault((gate, epc), []).append((ts, antenna, rssi))
    out: list[Key] = []
    for (gate, epc), reads in by_key.items():
        reads.sort(key=lambda r: r[0])
        groups: list[list[tuple[int, int, float]]] = []
        for read in reads:
            if groups and (read[0] - groups[-1][-1][0] <= gap_us
                           and read[0] - groups[-1][0][0] <= max_us):
                groups[-1].append(read)
            else:
                groups.append([read])
        for group in groups:
            first, last = group[0][0], group[-1][0]
            rssis = [r for _, _, r in group if not math.isnan(r)]
            hall = [t - first for t, a, _ in group if roles.get((gate, a)) == "hall"]
            dock = [t - first for t, a, _ in group if roles.get((gate, a)) == "dock"]
            n = len(group)
            if hall and dock:
                delta = sum(dock) / len(dock) - sum(hall) / len(hall)
                sep = min(1.0, 2 * abs(delta) / (last - first)) if last > first else 0.0
                weak = min(len(hall), len(dock))
                support = weak / (weak + 2)
                if sep >= 0.1:
                    direction = "out" if delta > 0 else "in"
                    sequence = "H>D" if delta > 0 else "D>H"
                    confidence = 0.3 + 0.7 * sep * support
                else:
                    direction, sequence, confidence = "unknown", "H~D", 0.3 * support
            else:
                direction = "unknown"
                sequence = "H" if hall else "D" if dock else "-"
                confidence = 0.2 * n / (n + 2)
            out.append((gate, epc, first, last, n, max(rssis) if rssis else None, direction,
                        round(confidence, 9), len(hall), len(dock), sequence))
    return sorted(out, key=repr)


# ------------------------------------------------------------------ scenarios


def test_a_parcel_carried_out_is_one_outbound_pass() -> None:
    rows = carry("G1", "3074257BF7194E4000001A85", T0, "out")
    tracker = PassTracker(ROLES)
    assert len(tracker.update(reads_of(rows))) == 0  # the watermark has not moved past it
    p = tracker.flush()
    assert len(p) == 1
    assert p.gate_id.tolist() == ["G1"] and p.epc.tolist() == ["3074257BF7194E4000001A85"]
    assert p.first_us.tolist() == [T0] and p.last_us.tolist() == [T0 + 2 * S]
    assert p.reads.tolist() == [40]
    assert p.peak_rssi.tolist() == [max(r[4] for r in rows)]
    assert p.direction.tolist() == ["out"] and p.sequence.tolist() == ["H>D"]
    assert 0.5 < p.confidence[0] <= 1.0
    assert p.hall_reads[0] + p.dock_reads[0] == 40
    assert p.hall_mean_us[0] < p.dock_mean_us[0]
    assert tracker.open_count == 0


def test_a_parcel_carried_in_is_inbound_and_the_roles_decide_not_the_antenna_numbers() -> None:
    for gate in ("G1", "G2"):
        p = feed(PassTracker(ROLES), carry(gate, "E1", T0, "in", seed=3))
        assert p.direction.tolist() == ["in"] and p.sequence.tolist() == ["D>H"]
        assert p.confidence[0] > 0.5
        p = feed(PassTracker(ROLES), carry(gate, "E1", T0, "out", seed=3))
        assert p.direction.tolist() == ["out"]


def test_one_antenna_only_is_unknown_with_low_confidence() -> None:
    rows = [(g, e, t, HALL_ANT["G1"], r) for g, e, t, _, r in carry("G1", "E1", T0, "out")]
    p = feed(PassTracker(ROLES), rows)
    assert p.direction.tolist() == ["unknown"] and p.sequence.tolist() == ["H"]
    assert 0 < p.confidence[0] <= 0.3
    assert p.reads.tolist() == [40] and p.dock_reads.tolist() == [0]
    assert math.isnan(p.dock_mean_us[0])


def test_interleaved_antennas_give_no_direction() -> None:
    rows = [("G1", "E1", T0 + k * 50_000, 1 + k % 2, -60.0) for k in range(40)]
    p = feed(PassTracker(ROLES), rows)
    assert p.direction.tolist() == ["unknown"] and p.sequence.tolist() == ["H~D"]
    assert p.confidence[0] <= 0.3


def test_antennas_without_a_role_count_but_do_not_vote() -> None:
    rows = [*carry("G1", "E1", T0, "out"),
            ("G1", "E1", T0 + S, 7, -40.0), ("G1", "E1", T0 + S, -1, math.nan)]
    p = feed(PassTracker(ROLES), rows)
    assert p.reads.tolist() == [42] and p.peak_rssi.tolist() == [-40.0]
    assert p.hall_reads[0] + p.dock_reads[0] == 40 and p.direction.tolist() == ["out"]
    unmapped = feed(PassTracker(ROLES), [("G9", e, t, a, r) for _, e, t, a, r in rows])
    assert unmapped.direction.tolist() == ["unknown"] and unmapped.sequence.tolist() == ["-"]


def test_no_rssi_gives_a_nan_peak() -> None:
    rows = [("G1", "E1", T0 + k * S // 10, 1, math.nan) for k in range(5)]
    assert math.isnan(feed(PassTracker(ROLES), rows).peak_rssi[0])


def test_two_parcels_through_the_same_door_at_once() -> None:
    rows = sorted(carry("G1", "EA", T0, "out", seed=1)
                  + carry("G1", "EB", T0 + 300_000, "out", n=30, seed=2), key=lambda r: r[2])
    p = feed(PassTracker(ROLES), rows)
    assert p.epc.tolist() == ["EA", "EB"]
    assert p.reads.tolist() == [40, 30] and p.direction.tolist() == ["out", "out"]
    assert table(p) == reference(rows, ROLES)


def test_the_same_parcel_through_two_doors() -> None:
    rows = sorted(carry("G1", "E1", T0, "in", seed=1)
                  + carry("G2", "E1", T0 + S, "out", seed=2), key=lambda r: r[2])
    p = feed(PassTracker(ROLES), rows)
    assert p.gate_id.tolist() == ["G1", "G2"] and p.direction.tolist() == ["in", "out"]


def test_the_same_parcel_through_the_same_door_twice() -> None:
    back = T0 + 2 * S + 10 * S  # ten seconds after the last read of the first pass
    rows = carry("G1", "E1", T0, "out", seed=1) + carry("G1", "E1", back, "in", seed=2)
    tracker = PassTracker(ROLES)
    first = tracker.update(reads_of(rows))  # the second pass's reads close the first
    assert first.direction.tolist() == ["out"] and first.last_us.tolist() == [T0 + 2 * S]
    second = tracker.flush()
    assert second.direction.tolist() == ["in"] and second.first_us.tolist() == [back]
    # a pause shorter than the gap is the same pass
    rows = carry("G1", "E1", T0, "out", seed=1) + carry("G1", "E1", T0 + 4 * S, "out", seed=2)
    assert feed(PassTracker(ROLES), rows).reads.tolist() == [80]


def test_the_gap_is_inclusive() -> None:
    at_gap = [("G1", "E1", T0, 1, -60.0), ("G1", "E1", T0 + GAP, 2, -60.0)]
    assert feed(PassTracker(ROLES), at_gap).reads.tolist() == [2]
    past = [("G1", "E1", T0, 1, -60.0), ("G1", "E1", T0 + GAP + 1, 2, -60.0)]
    assert feed(PassTracker(ROLES), past).reads.tolist() == [1, 1]


def test_passes_close_on_their_own_gates_watermark_or_on_flush() -> None:
    tracker = PassTracker(ROLES)
    rows = carry("G1", "E1", T0, "out")
    last = T0 + 2 * S
    assert len(tracker.update(reads_of(rows))) == 0
    # a read on another gate, far later, does not close a G1 pass
    assert len(tracker.update(reads_of([("G2", "E9", last + 100 * S, 1, -60.0)]))) == 0
    # nor does a G1 read exactly one gap later; one microsecond more does
    assert len(tracker.update(reads_of([("G1", "E8", last + GAP, 1, -60.0)]))) == 0
    closed = tracker.update(reads_of([("G1", "E8", last + GAP + 1, 1, -60.0)]))
    assert closed.epc.tolist() == ["E1"] and closed.reads.tolist() == [40]
    assert tracker.watermark_us("G1") == last + GAP + 1 and tracker.watermark_us("G7") is None
    # a silent gate: the caller's now closes what is idle, and nothing else
    assert len(tracker.flush(last + GAP + 1)) == 0
    assert tracker.flush(last + 2 * GAP + 2).epc.tolist() == ["E8"]
    assert tracker.open_count == 1  # E9 on G2, idle since last + 100 s
    assert tracker.flush(last + 100 * S + GAP + 1).epc.tolist() == ["E9"]
    assert tracker.open_count == 0 and len(tracker.flush()) == 0


def test_a_tag_parked_at_the_door_is_cut_into_passes_of_bounded_duration() -> None:
    rows = [("G1", "E1", T0 + k * 200_000, 1 + (k // 300) % 2, -60.0) for k in range(750)]
    p = feed(PassTracker(ROLES), rows)
    assert p.reads.tolist() == [301, 301, 148]  # a read exactly max after the first joins
    assert ((p.last_us - p.first_us) <= MAX).all()
    assert p.first_us.tolist() == [T0, T0 + 301 * 200_000, T0 + 602 * 200_000]
    assert table(p) == reference(rows, ROLES)
    for cuts in ([1], [299, 301, 302], list(range(0, 750, 7))):
        assert table(feed(PassTracker(ROLES), rows, cuts)) == table(p)
    tracker = PassTracker(ROLES)
    for k in range(0, 750, 10):  # streaming: the state never holds more than one pass
        tracker.update(reads_of(rows[k:k + 10]))
        assert tracker.open_count <= 1


# ------------------------------------------------------------------ out of order


def test_out_of_order_reads_within_the_gap_are_merged() -> None:
    rows = carry("G1", "E1", T0, "out")
    shuffled = [rows[i] for i in np.random.default_rng(5).permutation(len(rows))]
    tracker = PassTracker(ROLES)
    out = [tracker.update(reads_of(shuffled[:25])), tracker.update(reads_of(shuffled[25:]))]
    # and reads older than the watermark in a later batch, even before the pass's first
    early = ("G1", "E1", T0 - 2 * S, 1, -44.0)
    out.append(tracker.update(reads_of([early, ("G1", "E1", T0 + S, 2, -60.0)])))
    out.append(tracker.flush())
    p = Passes.concat(out)
    assert len(p) == 1 and p.reads.tolist() == [42] and p.first_us.tolist() == [T0 - 2 * S]
    assert p.peak_rssi.tolist() == [-44.0]
    assert table(p) == reference([*rows, early, ("G1", "E1", T0 + S, 2, -60.0)], ROLES)
    assert tracker.late_reads == 0


def test_a_late_read_inside_a_returned_pass_is_absorbed_one_outside_starts_a_pass() -> None:
    tracker = PassTracker(ROLES)
    rows = carry("G1", "E1", T0, "out")
    tracker.update(reads_of(rows))
    closed = tracker.update(reads_of([("G1", "E2", T0 + 20 * S, 1, -60.0)]))
    assert closed.epc.tolist() == ["E1"]
    # inside the window of the returned pass (up to last + gap): no new pass
    late = [("G1", "E1", T0 + S, 1, -30.0), ("G1", "E1", T0 + 2 * S + GAP, 2, -60.0),
            ("G1", "E1", T0 - GAP, 2, -60.0)]
    assert len(tracker.update(reads_of(late))) == 0
    assert tracker.late_reads == 3
    # really outside it: a pass of its own, closed at once by the watermark
    outside = tracker.update(reads_of([("G1", "E1", T0 + 2 * S + GAP + 1, 2, -60.0),
                                       ("G1", "E1", T0 - GAP - 1, 1, -60.0)]))
    assert outside.first_us.tolist() == [T0 - GAP - 1, T0 + 2 * S + GAP + 1]
    assert outside.reads.tolist() == [1, 1] and tracker.late_reads == 3
    # the same read on another gate, or another tag, is not late
    other = tracker.update(reads_of([("G2", "E1", T0 + S, 1, -60.0),
                                     ("G1", "E3", T0 + S, 1, -60.0)]))
    assert other.epc.tolist() == ["E3"] and tracker.late_reads == 3
    rest = tracker.flush()  # G2's watermark is at its only read: still open till now
    assert list(zip(rest.gate_id.tolist(), rest.epc.tolist(), strict=True)) == [
        ("G2", "E1"), ("G1", "E2")]


def test_reads_of_a_flushed_pass_are_absorbed_afterwards() -> None:
    tracker = PassTracker(ROLES)
    tracker.update(reads_of(carry("G1", "E1", T0, "out")))
    assert tracker.flush(T0 + 10 * S).reads.tolist() == [40]
    assert len(tracker.update(reads_of([("G1", "E1", T0 + 2 * S + S, 2, -60.0)]))) == 0
    assert tracker.late_reads == 1 and tracker.open_count == 0


# ------------------------------------------------------------------ batch boundaries


def test_batch_boundaries_do_not_matter_at_any_split_point() -> None:
    rows = sorted(carry("G1", "EA", T0, "out", seed=1)
                  + carry("G1", "EB", T0 + 1_500_000, "in", n=20, seed=2)
                  + carry("G1", "EA", T0 + 8 * S, "in", n=10, seed=3), key=lambda r: r[2])
    whole = table(feed(PassTracker(ROLES), rows))
    assert whole == reference(rows, ROLES) and len(whole) == 3
    for k in range(len(rows) + 1):
        assert table(feed(PassTracker(ROLES), rows, [k])) == whole, k
    rng = np.random.default_rng(11)
    for _ in range(20):
        cuts = rng.choice(len(rows) + 1, size=int(rng.integers(1, 15)), replace=False).tolist()
        assert table(feed(PassTracker(ROLES), rows, cuts, shuffle=rng)) == whole


def scenario(seed: int, parcels: int) -> list[Row]:
    """Seeded reads at three doors: carried parcels (some through a door twice, some
    through two doors), tags parked at a door, stray single reads; in time order."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for k in range(parcels):
        gate = str(rng.choice(["G1", "G2", "G3", "G4"]))  # G4 has no roles
        epc = f"30{rng.integers(0, parcels // 2):022X}"
        start = T0 + int(rng.integers(0, 600 * S))
        direction = str(rng.choice(["in", "out"]))
        g = gate if gate != "G4" else "G1"
        part = carry(g, epc, start, direction, n=int(rng.integers(1, 60)),
                     duration_us=int(rng.integers(0, 4 * S)), seed=k)
        rows += [(gate, e, t, a, r if rng.random() > 0.05 else math.nan)
                 for _, e, t, a, r in part]
    for k in range(5):
        start = T0 + int(rng.integers(0, 300 * S))
        ts = start + np.cumsum(rng.integers(1, 2 * GAP // 3, 400))
        rows += [("G3", f"PARKED{k}", int(t), int(rng.choice([1, 2, 5])), -50.0) for t in ts]
    for _ in range(200):
        rows.append((str(rng.choice(["G1", "G2"])), f"STRAY{rng.integers(0, 20)}",
                     T0 + int(rng.integers(0, 600 * S)), int(rng.choice([-1, 1, 2])),
                     float(rng.uniform(-80, -40))))
    rows.sort(key=lambda r: r[2])
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tracker_matches_the_scalar_reference_on_seeded_data(seed: int) -> None:
    rows = scenario(seed, 400)
    expected = reference(rows, ROLES)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(len(rows), size=len(rows) // 50, replace=False)).tolist()
    tracker = PassTracker(ROLES)
    assert table(feed(tracker, rows, cuts, shuffle=rng)) == expected
    assert table(feed(PassTracker(ROLES), rows)) == expected
    assert tracker.late_reads == 0 and tracker.open_count == 0


def test_tracker_matches_the_reference_when_reads_arrive_slightly_out_of_order() -> None:
    # Reads of one tag at one door are either under 0.5 s apart (within a carry) or over
    # 10 s apart (separate carries); arrival order is jittered by up to 0.3 s. So every
    # read arrives before its pass can close (that takes a read 3 s later), and the
    # result must not depend on the arrival order at all.
    rng = np.random.default_rng(21)
    rows: list[Row] = []
    for k in range(100):
        for visit in range(3):
            n = int(rng.integers(1, 50))
            start = T0 + int(rng.integers(0, 5 * S)) + visit * 20 * S
            rows += carry(str(rng.choice(["G1", "G2", "G3"])), f"E{k}", start,
                          str(rng.choice(["in", "out"])), n=n,
                          duration_us=int(rng.integers(0, (n - 1) * S // 2 + 1)), seed=k)
    rows.sort(key=lambda r: r[2])
    arrival = np.argsort([r[2] + int(rng.integers(0, 300_000)) for r in rows], kind="stable")
    jittered = [rows[i] for i in arrival]
    assert jittered != rows
    cuts = np.sort(rng.choice(len(rows), size=80, replace=False)).tolist()
    tracker = PassTracker(ROLES)
    assert table(feed(tracker, jittered, cuts)) == reference(rows, ROLES)
    assert tracker.late_reads == 0


@st.composite
def read_streams(draw: st.DrawFn) -> tuple[list[Row], list[int]]:
    rows = draw(st.lists(
        st.tuples(
            st.sampled_from(["G1", "G2", "G9"]),
            st.sampled_from(["E1", "E2", "E3"]),
            st.integers(0, 48).map(lambda q: T0 + q * 250_000),  # gap = 4 quarters
            st.sampled_from([-1, 1, 2, 3]),
            st.one_of(st.just(math.nan), st.floats(-90, -20)),
        ),
        max_size=60,
    ))
    rows.sort(key=lambda r: r[2])
    cuts = draw(st.lists(st.integers(0, len(rows)), max_size=8))
    return rows, cuts


@settings(max_examples=300, deadline=None)
@given(read_streams())
def test_any_split_of_an_ordered_stream_gives_the_reference_passes(
    stream: tuple[list[Row], list[int]],
) -> None:
    rows, cuts = stream
    tracker = PassTracker(ROLES, gap_us=S, max_duration_us=3 * S)
    # each batch reversed: order within a batch never matters
    batches = [0, *sorted(cuts), len(rows)]
    out = [tracker.update(reads_of(rows[a:b][::-1])) for a, b in pairwise(batches)]
    out.append(tracker.flush())
    assert table(Passes.concat(out)) == reference(rows, ROLES, gap_us=S, max_us=3 * S)
    assert tracker.open_count == 0 and tracker.late_reads == 0


@st.composite
def disordered_streams(draw: st.DrawFn) -> tuple[list[Row], list[Row], list[int]]:
    rows, cuts = draw(read_streams())
    delays = draw(st.lists(st.integers(0, 12), min_size=len(rows), max_size=len(rows)))
    arrival = sorted(range(len(rows)), key=lambda i: rows[i][2] + delays[i] * 250_000)
    return rows, [rows[i] for i in arrival], cuts


@settings(max_examples=300, deadline=None)
@given(disordered_streams())
def test_out_of_order_arrival_loses_nothing_and_changes_nothing_unless_a_read_is_late(
    stream: tuple[list[Row], list[Row], list[int]],
) -> None:
    # reads delayed by up to 3 s against a 1 s gap; no duration cut (that one depends on
    # where a pass starts, which a late read can move)
    rows, arrived, cuts = stream
    tracker = PassTracker(ROLES, gap_us=S, max_duration_us=10**12, late_us=10**12)
    got = feed(tracker, arrived, cuts)
    # every read is in exactly one pass, or counted as late
    assert int(got.reads.sum()) + tracker.late_reads == len(rows)
    if tracker.late_reads == 0:
        assert table(got) == reference(rows, ROLES, gap_us=S, max_us=10**12)


def test_a_late_read_inside_an_open_pass_does_not_hide_its_last_read() -> None:
    tracker = PassTracker(ROLES)
    tracker.update(reads_of([("G1", "E1", T0, 1, -60.0), ("G1", "E1", T0 + 2 * S, 2, -60.0)]))
    # T0 + 4.5 s is 4 s after the late read but within the gap of the pass's last read
    tracker.update(reads_of([("G1", "E1", T0 + S // 2, 1, -60.0),
                             ("G1", "E1", T0 + 4_500_000, 2, -60.0)]))
    p = tracker.flush()
    assert p.reads.tolist() == [4] and p.last_us.tolist() == [T0 + 4_500_000]


def test_a_late_read_finds_its_own_pass_among_passes_remembered_in_any_order() -> None:
    # G2/E2 closes before G1/E1, so it is remembered first although it sorts after it;
    # found by hypothesis in CI (the late read used to start a spurious one-read pass)
    tracker = PassTracker(ROLES, gap_us=S)
    tracker.update(reads_of([("G2", "E2", T0, 1, -60.0), ("G2", "E9", T0 + 2 * S, 1, -60.0)]))
    tracker.update(reads_of([("G1", "E1", T0, 1, -60.0), ("G1", "E9", T0 + 2 * S, 1, -60.0)]))
    assert tracker.update(reads_of([("G2", "E2", T0 + S // 2, 2, -60.0)])).reads.size == 0
    assert tracker.late_reads == 1
    rest = tracker.flush()
    assert sorted(zip(rest.gate_id.tolist(), rest.epc.tolist(), strict=True)) == [
        ("G1", "E9"), ("G2", "E9")]


# ------------------------------------------------------------------ API edges


def test_empty_batches_and_empty_flushes() -> None:
    tracker = PassTracker(ROLES)
    assert len(tracker.update(reads_of([]))) == 0
    assert len(tracker.flush()) == 0 and len(tracker.flush(T0)) == 0
    assert len(Passes.concat([])) == 0


def test_reads_carry_codes_into_per_batch_id_lists() -> None:
    reads = Reads(
        gate=np.array([1, 1, 0], np.int32), epc=np.array([0, 0, 1], np.int32),
        ts_us=np.array([T0, T0 + S, T0], np.int64), antenna=np.array([1, 2, 1], np.int16),
        rssi=np.array([-50.0, -60.0, -70.0]), gate_ids=["G2", "G1"], epc_ids=["EA", "EB"],
    )
    tracker = PassTracker(ROLES)
    tracker.update(reads)
    out = tracker.flush()
    assert out.gate_id.tolist() == ["G1", "G2"] and out.epc.tolist() == ["EA", "EB"]
    assert out.direction.tolist() == ["out", "unknown"] and out.reads.tolist() == [2, 1]


def test_bad_input_fails_loudly() -> None:
    with pytest.raises(ValueError, match="same length"):
        Reads(np.zeros(2, np.int32), np.zeros(1, np.int32), np.zeros(2, np.int64),
              np.zeros(2, np.int16), np.zeros(2), ["G1"], ["E1"])
    with pytest.raises(ValueError, match="epc_ids"):
        Reads(np.zeros(1, np.int32), np.ones(1, np.int32), np.zeros(1, np.int64),
              np.zeros(1, np.int16), np.zeros(1), ["G1"], ["E1"])
    with pytest.raises(ValueError, match="role"):
        PassTracker({("G1", 1): "van"})
    with pytest.raises(ValueError, match="role"):
        PassTracker({("G1", -1): "hall"})
    with pytest.raises(ValueError):
        PassTracker(ROLES, gap_us=0)


def test_new_roles_apply_to_new_reads() -> None:
    tracker = PassTracker({})
    rows = [("G1", "E1", T0 + k * 50_000, 1 if k < 20 else 2, -60.0) for k in range(40)]
    assert tracker.update(reads_of(rows[:20])).reads.tolist() == []
    tracker.set_roles(ROLES)
    p = Passes.concat([tracker.update(reads_of(rows[20:])), tracker.flush()])
    # the first 20 reads were taken without roles; the rest (dock side) vote
    assert p.reads.tolist() == [40] and p.hall_reads.tolist() == [0]
    assert p.direction.tolist() == ["unknown"] and p.sequence.tolist() == ["D"]
