"""A crash changes no ETA: the seeded day with every planted fault replayed through the
pipeline in one-second batches, once as it happens and once with ``milepost ingest``
"restarted" at three moments of the tour. A restart is a new pipeline given only what
the crashed one had committed, as ``milepost ingest`` reads it back at start-up
(ingest.service ``run_plan`` and ``_cargo_scan``): parcel_latest, the ``ingest_state``
rows, each van's newest fix (vehicle_latest) and inventory, and the fixes and geofence
events stored since the ETA state.

With the ETA state written with every batch (a small fleet), every ETA row, parcel event,
parcel state and geofence event after the restarts is the one of the day without them;
with it written once a minute (a large fleet), the restarts catch up from the stored
fixes and geofence events, and the ETAs stay close to those of the day without restarts.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest

from devices.records import US_PER_S
from ingest.manifest import parse_manifest
from ingest.pipeline import ETA_STATE, GEOFENCE_STATE, PARCEL_STATE, Pipeline
from ingest.replay import Replayed, pipeline_for, replay
from ingest.writer import datetime_to_us
from simulators.day import FAULTS_DAY, FAULTS_DAY_SEED, Day, make_day

T0 = 1_795_500_000_000_000
# seconds into the day: just after the vans left the hub (the last at 1366 s), on tour, at
# stops and between them
CUTS_S = (1380, 2600, 3900)
Rows = dict[str, list[tuple[Any, ...]]]


def the_day() -> tuple[Day, int, int]:
    day = make_day(FAULTS_DAY, seed=FAULTS_DAY_SEED, start_us=T0)
    from_us = T0 + round((day.first_departure_s() - 60.0) * US_PER_S)
    end_us = max(int(a["ts_us"][-1]) for a in day.fixes.values()) + 3600 * US_PER_S
    return day, from_us, end_us


def segment(p: Pipeline, day: Day, lo_us: int, hi_us: int, from_us: int,
            states: dict[str, Any]) -> Replayed:  # fmt: skip
    """Replay [lo_us, hi_us) of the day (its evidence from from_us) through ``p``; the
    ingest_state rows it commits go into ``states``."""
    lo = max(lo_us, from_us)

    def keep(_end: int, drained: Any) -> None:
        for _instance, name, doc in drained.rows.get("ingest_state", ()):
            states[name] = doc

    return replay(p, start_us=lo_us, end_us=hi_us,
                  fixes={v: a[(a["ts_us"] >= lo) & (a["ts_us"] < hi_us)]
                         for v, a in day.fixes.items()},
                  cargo=[m for m in day.cargo if lo <= m[1].ts_us < hi_us],
                  sensors=[m for m in day.sensors if lo <= m[1].ts_us < hi_us],
                  pods=[m for m in day.pods if lo <= m[1].ts_us < hi_us],
                  batch_s=1.0, on_batch=keep)  # fmt: skip


def restarted(doc: dict[str, Any], day: Day, committed: Rows, states: dict[str, Any],
              upto_us: int, from_us: int, eta_every_us: int | None) -> Pipeline:
    """A new pipeline from what was committed before ``upto_us``, as run_plan reads it."""
    p = pipeline_for(parse_manifest(doc))
    if eta_every_us is not None:
        p.eta_small, p.eta_every_us = 0, eta_every_us
    latest: dict[str, tuple[Any, ...]] = {}
    for r in committed.get("parcel_latest", ()):
        latest[r[0]] = r
    flagged = defaultdict(set)
    for e in committed.get("parcel_event", ()):
        flagged[e[2]].add(e[4])
    p.parcels.seed([(tn, r[2], r[3], r[4], datetime_to_us(r[1]),
                     "Exception_LATE" in flagged[tn], "Exception_COLD_CHAIN" in flagged[tn], r[5])
                    for tn, r in latest.items()])  # fmt: skip
    p.restore_state(orjson.loads(states[PARCEL_STATE]))
    inventories: dict[str, tuple[Any, ...]] = {}  # the newest stored per van (_cargo_scan)
    for r in sorted(committed.get("cargo", ()), key=lambda r: r[0]):
        if r[5] is not None:
            inventories[r[1]] = r
    for van, r in inventories.items():
        p.cargo.seed(van, datetime_to_us(r[0]), set(r[5]))
    fixes = {v: a[(a["ts_us"] >= from_us) & (a["ts_us"] < upto_us)] for v, a in day.fixes.items()}
    newest = {v: (int(a["ts_us"][-1]), float(a["lon_deg"][-1]), float(a["lat_deg"][-1]))
              for v, a in fixes.items() if len(a)}  # fmt: skip
    p.restore_geofences(orjson.loads(states[GEOFENCE_STATE]), newest)
    stored = [(v, int(f["ts_us"]), float(f["lon_deg"]), float(f["lat_deg"]),
               float(f["speed_mps"])) for v, a in fixes.items() for f in a]  # fmt: skip
    fences = [(datetime_to_us(g[0]), g[1], g[2], g[3]) for g in committed.get("geofence", ())]
    assert p.restore_etas(orjson.loads(states[ETA_STATE]), stored, fences) == len(day.fixes)
    return p


def play(eta_every_us: int | None, cuts_s: tuple[int, ...]) -> Rows:
    day, from_us, end_us = the_day()
    doc = {**day.manifest, "gates": []}
    p = pipeline_for(parse_manifest(doc))
    if eta_every_us is not None:
        p.eta_small, p.eta_every_us = 0, eta_every_us
    committed: Rows = defaultdict(list)
    states: dict[str, Any] = {}
    bounds = [day.start_us, *(day.start_us + c * US_PER_S for c in cuts_s), end_us]
    for k, (lo, hi) in enumerate(pairwise(bounds)):
        if k:
            p = restarted(doc, day, committed, states, lo, from_us, eta_every_us)
        for table, rows in segment(p, day, lo, hi, from_us, states).rows.items():
            committed[table].extend(rows)
    return committed


def etas(rows: Rows) -> dict[tuple[int, str], tuple[int, int, int]]:
    """Every ETA written: (time, tracking number) -> (eta, earliest, latest)."""
    out = {}
    for columns in rows["eta_snapshot"]:  # a batch's: one list per column
        for t, tn, eta, lo, hi, _conf in zip(*columns, strict=True):
            out[(datetime_to_us(t), tn)] = (datetime_to_us(eta), datetime_to_us(lo),
                                            datetime_to_us(hi))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def reference() -> Rows:
    return play(None, ())


def after_first_cut(e: dict[tuple[int, str], Any]) -> dict[tuple[int, str], Any]:
    return {k: v for k, v in e.items() if k[0] >= T0 + CUTS_S[0] * US_PER_S}


def test_restarts_with_the_eta_state_of_every_batch_change_no_eta(reference: Rows) -> None:
    got = play(None, CUTS_S)
    want_etas, got_etas = after_first_cut(etas(reference)), after_first_cut(etas(got))
    assert len(want_etas) > 100  # the tour goes on after the first restart
    assert got_etas == want_etas
    for table in ("parcel_event", "parcel_latest", "geofence"):
        assert plain(got[table]) == plain(reference[table]), table


def plain(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows sorted, their Jsonb details as the documents they hold."""
    return sorted((tuple(getattr(x, "obj", x) for x in r) for r in rows), key=repr)


def seen(e: dict[tuple[int, str], tuple[int, int, int]], at_us: Sequence[int]
         ) -> dict[tuple[int, str], tuple[int, int, int]]:  # fmt: skip
    """What a customer reads at each of ``at_us``: each parcel's newest ETA written by then."""
    per: dict[str, list[tuple[int, tuple[int, int, int]]]] = defaultdict(list)
    for (t, tn), v in sorted(e.items()):
        per[tn].append((t, v))
    out = {}
    for tn, rows in per.items():
        times = [t for t, _ in rows]
        for at in at_us:
            k = bisect.bisect_right(times, at) - 1
            if k >= 0:
                out[(at, tn)] = rows[k][1]
    return out


def test_restarts_from_a_minute_old_eta_state_catch_up() -> None:
    """Every minute after the first restart, every parcel's ETA window as a customer reads
    it, with restarts and without: 95 % within a minute (an ETA is rewritten when it moved
    a minute), 99 % within two, none more than 10 minutes apart. (Measured: p95 35-56 s,
    p99 75-99 s, worst 4.4-6.3 min; without the ETA state p50 40-136 s, p95 an hour, the
    latest bound up to 3.7 hours off; without the geofence events' catch-up, p99 of the
    latest bound 94 min.)"""
    minute = 60 * US_PER_S
    # from half a minute after the first restart: a restarted ingest refreshes every ETA
    # at once, a running one every 30 s (a van's ETAs at the very moment differ by that)
    grid = [T0 + CUTS_S[0] * US_PER_S + minute // 2 + k * minute for k in range(90)]
    want = seen(etas(play(minute, ())), grid)
    got = seen(etas(play(minute, CUTS_S)), grid)
    assert len(want) > 500 and set(got) == set(want)
    off = np.array([[g - w for g, w in zip(got[k], want[k], strict=True)] for k in want])
    off = np.abs(off) / US_PER_S  # columns: eta, earliest, latest
    p95, p99, worst = np.percentile(off, 95, axis=0), np.percentile(off, 99, axis=0), off.max(0)
    assert (p95 <= 60).all() and (p99 <= 120).all() and (worst <= 600).all(), (p95, p99, worst)
