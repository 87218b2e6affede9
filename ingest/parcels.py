"""The parcel stage of ``milepost ingest``: passes, geofence events, cargo changes, proofs
and sensor readings -> bindings, parcel events and ETAs (geo/matching, geo/lifecycle,
geo/eta), for one drained batch at a time.

:class:`ParcelStage` does no I/O: the service loads the plan (:func:`load_plan`), hands
it a batch's evidence, and writes what :meth:`ParcelStage.process` returns in the same
transaction as the batch, so a parcel event exists exactly when the evidence that caused
it was committed. Evidence of one batch is applied in event-time order (passes by their
last read; removals from the cargo by when they were first missed).

Parcel event ids are UUIDv5 of (tracking number, time, status, sub-status): a batch
replayed after a crash recreates the same ids, and ``ON CONFLICT DO NOTHING`` stores
each event once.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson
import psycopg
from numpy.typing import NDArray

from devices.fleet import ProofOfDelivery
from geo.eta import EtaEstimator, Etas, RoutePlan, pack_arrays, unpack_arrays
from geo.fences import FenceSet
from geo.lifecycle import DELIVERED, STATUSES, ParcelBook, ParcelEvents, PlanParcels
from geo.matching import BOUND, OUTCOMES, TrackBuffer, match_passes
from geo.transitions import Events
from ingest.batch import FixFrame, ReadFrame
from ingest.manifest import Manifest
from ingest.passes import Passes
from ingest.writer import datetime_to_us

S_US: Final = 1_000_000
EVENT_NAMESPACE: Final = uuid.UUID("6d696c65-706f-7374-2d70-617263656c73")
ETA_EVERY_US: Final = 30 * S_US  # a van's ETAs are refreshed at most this often (event time)
ETA_STEP_US: Final = 60 * S_US  # a snapshot is written when an ETA moved this much
TAG_JOIN_US: Final = 30 * S_US  # reads of a van's tag this close form one interval
TAG_KEEP_US: Final = 10 * 60 * S_US


@dataclass(frozen=True, slots=True)
class Plan:
    """What the parcel stage needs of the manifest, as loaded from the database."""

    parcels: PlanParcels
    routes: dict[str, list[str]]  # vehicle -> ordered stop ids
    hubs: dict[str, str]  # vehicle -> hub stop id
    stop_kind: dict[str, str]
    stop_center: dict[str, tuple[float, float]]  # lon, lat
    gate_dock: dict[str, str]  # gate -> dock stop id
    vehicle_epc: dict[str, str]  # EPC (upper-case) -> vehicle id

    def key(self) -> bytes:
        return orjson.dumps([list(self.parcels.tracking_number), list(self.parcels.epc),
                             list(self.parcels.stop_id), list(self.parcels.promised_us),
                             list(self.parcels.temp_min_c), list(self.parcels.temp_max_c),
                             self.routes, self.hubs, self.stop_kind, self.stop_center,
                             self.gate_dock, self.vehicle_epc])  # fmt: skip


def geofence_center(geofence: dict[str, Any]) -> tuple[float, float]:
    if geofence.get("type") == "Point":
        lon, lat = geofence["coordinates"][:2]
        return float(lon), float(lat)
    polygon = geofence["coordinates"] if geofence.get("type") == "Polygon" else \
        geofence["coordinates"][0]  # MultiPolygon: its first polygon
    ring = polygon[0]
    xs = [float(p[0]) for p in ring[:-1]] or [0.0]
    ys = [float(p[1]) for p in ring[:-1]] or [0.0]
    return sum(xs) / len(xs), sum(ys) / len(ys)


async def load_plan(conn: psycopg.AsyncConnection[Any]) -> Plan:
    cur = await conn.execute(
        "SELECT tracking_number, epc, stop_id, promised_by, temp_min_c, temp_max_c"
        " FROM parcel ORDER BY tracking_number")  # fmt: skip
    rows = await cur.fetchall()
    parcels = PlanParcels(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        [None if r[3] is None else datetime_to_us(r[3]) for r in rows],
        [r[4] for r in rows], [r[5] for r in rows],
    )  # fmt: skip
    routes: dict[str, list[str]] = {}
    cur = await conn.execute("SELECT vehicle_id, stop_id FROM route_stop ORDER BY vehicle_id, seq")
    for vehicle, stop in await cur.fetchall():
        routes.setdefault(vehicle, []).append(stop)
    cur = await conn.execute("SELECT vehicle_id, hub_stop_id FROM route")
    hubs = {r[0]: r[1] for r in await cur.fetchall()}
    for vehicle in hubs:
        routes.setdefault(vehicle, [])
    cur = await conn.execute("SELECT stop_id, kind, geofence FROM stop")
    stops = await cur.fetchall()
    cur = await conn.execute("SELECT gate_id, dock_stop_id FROM gate")
    gates = {r[0]: r[1] for r in await cur.fetchall()}
    cur = await conn.execute("SELECT epc, vehicle_id FROM vehicle WHERE epc IS NOT NULL")
    tags = {r[0].upper(): r[1] for r in await cur.fetchall()}
    return Plan(parcels, routes, hubs, {r[0]: r[1] for r in stops},
                {r[0]: geofence_center(r[2]) for r in stops}, gates, tags)  # fmt: skip


def plan_from_manifest(m: Manifest) -> tuple[Plan, FenceSet]:
    """The plan and the geofences of a validated manifest alone (a replay, a benchmark):
    what :func:`load_plan` and the stop table give once the manifest is stored."""
    stops = m.stops
    geofences = [s.geofence.model_dump() for s in stops]
    fences = FenceSet.from_stops([s.stop_id for s in stops], [s.kind for s in stops],
                                 geofences, [s.radius_m for s in stops])  # fmt: skip
    ps = sorted(m.parcels, key=lambda p: p.tracking_number)
    parcels = PlanParcels(
        [p.tracking_number for p in ps], [p.epc.upper() if p.epc else None for p in ps],
        [p.stop_id for p in ps],
        [None if p.promised_by is None else datetime_to_us(p.promised_by) for p in ps],
        [p.temp_min_c for p in ps], [p.temp_max_c for p in ps],
    )  # fmt: skip
    plan = Plan(parcels, {r.vehicle_id: list(r.stop_ids) for r in m.routes},
                {r.vehicle_id: r.hub_stop_id for r in m.routes},
                {s.stop_id: s.kind for s in stops},
                {s.stop_id: geofence_center(g) for s, g in zip(stops, geofences, strict=True)},
                {g.gate_id: g.dock_stop_id for g in m.gates},
                {v.epc.upper(): v.vehicle_id for v in m.vehicles if v.epc})  # fmt: skip
    return plan, fences


@dataclass(frozen=True, slots=True)
class CargoEvidence:
    vehicle_id: str
    ts_us: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    removed_since_us: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SensorEvidence:
    vehicle_id: str
    ts_us: int
    temp_c: float


@dataclass(frozen=True, slots=True)
class PodEvidence:
    vehicle_id: str
    pod: ProofOfDelivery


@dataclass(slots=True)
class ParcelOutput:
    """What one batch changed: write all of it with the batch."""

    pass_vehicle: list[str | None] = field(default_factory=list)  # per pass given
    events: ParcelEvents = field(default_factory=ParcelEvents)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)  # parcel_event
    latest_rows: list[tuple[Any, ...]] = field(default_factory=list)  # parcel_latest status
    eta_rows: list[tuple[Any, ...]] = field(default_factory=list)  # eta_snapshot / latest


def event_id(tracking_number: str, ts_us: int, status: str, sub_status: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_NAMESPACE, f"{tracking_number}|{ts_us}|{status}|{sub_status}")


class ParcelStage:
    """Owns the track buffer, the parcel book and the ETA estimator. Not thread-safe."""

    def __init__(self) -> None:
        self.track = TrackBuffer()
        self.book = ParcelBook()
        self.eta = EtaEstimator(RoutePlan.build([]))
        self.fences = FenceSet.empty()
        self.plan: Plan | None = None
        self._plan_key: bytes = b""
        self._tags: dict[tuple[str, str], list[list[int]]] = {}  # (gate, van) -> [[from, to]]
        self._eta_at: dict[str, int] = {}  # van -> event time of its last ETA refresh
        self._eta_last = np.empty(0, np.int64)  # per book row: the last ETA written
        self.events_total = 0

    @property
    def ready(self) -> bool:
        return self.plan is not None

    def set_plan(self, plan: Plan, fences: FenceSet) -> bool:
        """Take a (re)loaded plan; False when it is the one already in use."""
        self.fences = fences
        key = plan.key()
        if key == self._plan_key:
            return False
        old = dict(zip(self.book.tracking_number.tolist(), self._eta_last.tolist(),
                       strict=True))  # fmt: skip
        self.book.set_plan(plan.parcels, plan.routes)
        self._eta_last = np.array([old.get(t, 0) for t in self.book.tracking_number.tolist()],
                                  dtype=np.int64)  # fmt: skip
        routes = []
        for vehicle, stops in plan.routes.items():
            hub = plan.stop_center.get(plan.hubs.get(vehicle, ""))
            on = [(s, *plan.stop_center[s]) for s in stops if s in plan.stop_center]
            if hub is not None:
                routes.append((vehicle, hub, on))
        self.eta.set_plan(RoutePlan.build(routes))
        self.plan, self._plan_key = plan, key
        return True

    def seed(self, rows: Sequence[tuple[str, str, str | None, str | None, int, bool, bool,
                                        float | None]]) -> None:  # fmt: skip
        """Rows of parcel_latest (tracking, status, sub_status, vehicle_id, time_us),
        whether each parcel was ever late or out of its temperature range, and the
        confidence of its binding."""
        for row in rows:
            self.book.seed(*row)

    # ------------------------------------------------------------------ one batch

    def process(self, fixes: FixFrame, reads: ReadFrame, passes: Passes, geofence: Events,
                cargo: Sequence[CargoEvidence], sensors: Sequence[SensorEvidence],
                pods: Sequence[PodEvidence]) -> ParcelOutput:  # fmt: skip
        out = ParcelOutput(pass_vehicle=[None] * len(passes))
        if self.plan is None:
            return out
        plan = self.plan
        f = fixes.fix
        if len(fixes):
            self.track.extend(fixes.vehicle, fixes.vehicles, f["ts_us"], f["lon_deg"],
                              f["lat_deg"])  # fmt: skip
            self.eta.observe_fixes(fixes.vehicle, fixes.vehicles, f["ts_us"], f["lon_deg"],
                                   f["lat_deg"], f["speed_mps"])  # fmt: skip
        self._note_tags(reads, plan)
        ev = out.events
        steps: list[tuple[int, int, int, Any]] = []  # (ts, kind order, seq, item)
        matches = self._match(passes, plan)
        for i in range(len(passes)):
            steps.append((int(passes.last_us[i]), 0, i, ("pass", i)))
        for i in range(len(geofence)):
            steps.append((int(geofence.ts_us[i]), 1, i, ("fence", i)))
        for i, c in enumerate(cargo):
            steps.append((min((c.ts_us, *c.removed_since_us)), 2, i, ("cargo", c)))
        for i, p in enumerate(pods):
            steps.append((p.pod.ts_us, 3, i, ("pod", p)))
        for i, s in enumerate(sensors):
            steps.append((s.ts_us, 4, i, ("sensor", s)))
        steps.sort(key=lambda s: s[:3])
        for _ts, _k, _i, (kind, item) in steps:
            if kind == "pass":
                ev.extend(self._on_pass(passes, item, matches, out, plan))
            elif kind == "fence":
                ev.extend(self._on_fence(geofence, item, plan))
            elif kind == "cargo":
                ev.extend(self._on_cargo(item))
            elif kind == "pod":
                ev.extend(self._on_pod(item))
            else:
                ev.extend(self.book.sensor(item.vehicle_id, item.ts_us, item.temp_c))
        if len(fixes):
            newest = np.full(len(fixes.vehicles), np.iinfo(np.int64).min)
            np.maximum.at(newest, fixes.vehicle, f["ts_us"])
            for vehicle, ts in zip(fixes.vehicles, newest.tolist(), strict=True):
                ev.extend(self.book.advance(vehicle, ts))
            self._etas(fixes.vehicles, newest, out)
        self._rows(out)
        return out

    def _note_tags(self, reads: ReadFrame, plan: Plan) -> None:
        """Intervals in which each van's own tag was read by each gate."""
        if not len(reads) or not plan.vehicle_epc:
            return
        vans = np.array([plan.vehicle_epc.get(e.upper(), "") for e in reads.epcs], dtype=np.str_)
        is_van = vans[reads.epc] != ""
        if not is_van.any():
            return
        gate, epc, ts = reads.gate[is_van], reads.epc[is_van], reads.read["ts_us"][is_van]
        order = np.lexsort((ts, epc, gate))
        for g, e, t in zip(gate[order].tolist(), epc[order].tolist(), ts[order].tolist(),
                           strict=True):  # fmt: skip
            spans = self._tags.setdefault((reads.gates[g], str(vans[e])), [])
            if spans and spans[-1][0] - TAG_JOIN_US <= t <= spans[-1][1] + TAG_JOIN_US:
                spans[-1][0], spans[-1][1] = min(spans[-1][0], t), max(spans[-1][1], t)
            else:
                spans.append([t, t])
            newest = max(s[1] for s in spans)
            spans[:] = [s for s in spans if newest - s[1] <= TAG_KEEP_US]

    def _match(self, passes: Passes, plan: Plan) -> Any:
        if not len(passes):
            return None
        gate_ids = sorted({str(g) for g in passes.gate_id.tolist()})
        gate_code = {g: k for k, g in enumerate(gate_ids)}
        dock = self.fences.index_of([plan.gate_dock.get(str(g), "") for g in passes.gate_id])
        tg, tv, ta, tb = [], [], [], []
        codes = dict(zip(self.track.vehicle_ids, range(len(self.track.vehicle_ids)), strict=True))
        for (gate, van), spans in self._tags.items():
            if gate in gate_code and van in codes:
                for a, b in spans:
                    tg.append(gate_code[gate])
                    tv.append(codes[van])
                    ta.append(a)
                    tb.append(b)
        return match_passes(self.track, self.fences, dock, passes.first_us, passes.last_us,
                            pass_gate=[gate_code[str(g)] for g in passes.gate_id],
                            tag_gate=tg, tag_vehicle=tv, tag_from_us=ta, tag_to_us=tb)  # fmt: skip

    def _on_pass(self, passes: Passes, i: int, matches: Any, out: ParcelOutput,
                 plan: Plan) -> ParcelEvents:  # fmt: skip
        epc = str(passes.epc[i]).upper()
        ev = ParcelEvents()
        if epc in plan.vehicle_epc:
            return ev
        p = self.book.parcels_of_epcs([epc])
        if p[0] < 0:
            return ev
        direction = str(passes.direction[i])
        ev.extend(self.book.hub_read(p, int(passes.first_us[i]), direction == "in"))
        if direction != "out":
            return ev
        t = int(passes.last_us[i])
        if int(matches.outcome[i]) == BOUND:
            vehicle = self.track.vehicle_ids[int(matches.vehicle[i])]
            out.pass_vehicle[i] = vehicle
            ev.extend(self.book.bind(p, [vehicle], t, float(matches.confidence[i]), ["gate"]))
        else:
            ev.extend(self.book.unbound(p, t, [str(OUTCOMES[int(matches.outcome[i])])],
                                        [int(matches.candidates[i])]))  # fmt: skip
        return ev

    def _on_fence(self, g: Events, i: int, plan: Plan) -> ParcelEvents:
        vehicle, stop, kind = str(g.vehicle_id[i]), str(g.stop_id[i]), str(g.kind[i])
        ts, stop_kind = int(g.ts_us[i]), plan.stop_kind.get(stop)
        ev = ParcelEvents()
        self._fence_eta(vehicle, stop, kind, ts, plan)
        if kind == "enter":
            if stop_kind == "hub":
                self.book.arrived_hub(vehicle)
        elif kind == "exit":
            from_hub = stop_kind == "hub" and plan.hubs.get(vehicle, stop) == stop
            if from_hub:
                ev.extend(self.book.departed_hub(vehicle, ts))
            elif stop_kind == "delivery":
                dwell = float(g.dwell_s[i])
                self.book.left_stop(vehicle, stop, ts, 0.0 if math.isnan(dwell) else dwell)
        return ev

    def _fence_eta(self, vehicle: str, stop: str, kind: str, ts: int, plan: Plan, *,
                   again: bool = False, last_at_hub: bool = False) -> None:  # fmt: skip
        """What a geofence event tells the ETA estimator: an arrival at a stop (at the
        van's own hub: waiting again), a departure (from its hub: on tour). ``again``: the
        event may have reached the estimator before its last snapshot, so it is told only
        where a second telling changes nothing: an arrival at a route stop (a visited one
        ignores it), the departure from the stop the van is at, and, for the van's last
        event at its hub (``last_at_hub``), a return to it while on tour or a departure
        from it while waiting (its earlier ones are history the state has)."""
        hub = plan.stop_kind.get(stop) == "hub"
        if kind == "enter":
            home = hub and plan.hubs.get(vehicle) == stop
            if again and home and not (last_at_hub and self.eta.is_waiting(vehicle) is False):
                return
            self.eta.observe_arrival(vehicle, stop, ts, hub=home)
        elif kind == "exit":
            from_hub = hub and plan.hubs.get(vehicle, stop) == stop
            if again and (not (last_at_hub and self.eta.is_waiting(vehicle)) if from_hub
                          else self.eta.at_stop(vehicle) != stop):  # fmt: skip
                return
            self.eta.observe_departure(vehicle, stop, ts, hub=from_hub)

    # ------------------------------------------------------------------ a restart

    def eta_state(self) -> dict[str, Any]:
        """What the ETAs need across a restart: the estimator's snapshot, when each van's
        ETAs were last refreshed, and the ETA last written per parcel (packed, as the
        estimator's arrays are)."""
        b, last = self.book, self._eta_last
        written = np.flatnonzero(last)
        return {"estimator": self.eta.snapshot(), "eta_at": self._eta_at,
                "eta_last": pack_arrays({"tracking_number": b.tracking_number[written],
                                         "eta_us": last[written]}),
                "last_fix": self.eta.last_fix_us()}  # where the stored fixes are news

    def restore_eta(self, state: Any, fixes: Sequence[tuple[str, int, float, float, float]],
                    fences: Sequence[tuple[int, str, str, str]]) -> int:  # fmt: skip
        """After a restart, with the plan set: the ETA state of :meth:`eta_state`, then what
        came after it was written (the stored fixes and geofence events since: ``(vehicle,
        ts_us, lon, lat, speed_mps)`` and ``(ts_us, vehicle, stop_id, kind)``), in time
        order (a live batch tells its fixes first, then its events, and estimates between
        batches: the catch-up is close, not exact); the fixes of the track buffer's
        horizon place the events of the first batches after it. Raises ValueError,
        changing nothing, for a state this version cannot read. Returns the vans
        restored."""
        try:  # everything read before anything is kept: a bad state changes nothing
            eta_at = {str(k): int(v) for k, v in state["eta_at"].items()}
            packed = unpack_arrays(state["eta_last"])
            written = dict(zip(packed["tracking_number"].astype(str).tolist(),
                               packed["eta_us"].astype(np.int64).tolist(), strict=True))
            eta_last = np.array([written.get(t, 0) for t in self.book.tracking_number.tolist()],
                                dtype=np.int64)  # fmt: skip
        except (KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"not an ETA state: {exc!r}") from exc
        n = self.eta.restore(state["estimator"])
        self._eta_at, self._eta_last = eta_at, eta_last
        fixes = sorted(fixes, key=lambda f: f[1])
        self._track_fixes(fixes)  # positions for the events of the first batches
        plan = self.plan
        if plan is None:  # (set_plan comes first; without a plan there is nothing to tell)
            return n
        never = np.iinfo(np.int64).min
        newest = self.eta.last_fix_us()
        ahead = [f for f in fixes if f[1] > newest.get(f[0], never)]
        events = sorted(fences, key=lambda e: e[0])
        # no newer than the van's newest fix in the state: it may have been told already
        told = [e[0] <= newest.get(e[1], never) for e in events]
        last_hub = {}  # per van, its last event at a hub among those it may have been told
        for i, (_ts, vehicle, stop, _kind) in enumerate(events):
            if told[i] and plan.stop_kind.get(stop) == "hub":
                last_hub[vehicle] = i
        k = 0
        for i, (ts, vehicle, stop, kind) in enumerate(events):
            j = k
            while j < len(ahead) and ahead[j][1] <= ts:
                j += 1
            self._observe(ahead[k:j])
            k = j
            self._fence_eta(vehicle, stop, kind, ts, plan, again=told[i],
                            last_at_hub=last_hub.get(vehicle) == i)  # fmt: skip
        self._observe(ahead[k:])
        return n

    @staticmethod
    def _columns(fixes: Sequence[tuple[str, int, float, float, float]]
                 ) -> tuple[NDArray[np.intp], list[str], list[NDArray[Any]]]:  # fmt: skip
        names = sorted({f[0] for f in fixes})
        code = {v: i for i, v in enumerate(names)}
        cols = list(zip(*fixes, strict=True))
        return (np.array([code[v] for v in cols[0]], np.intp), names,
                [np.array(cols[1], np.int64), *(np.array(c, np.float64) for c in cols[2:])])

    def _observe(self, fixes: Sequence[tuple[str, int, float, float, float]]) -> None:
        if fixes:
            code, names, (ts, lon, lat, speed) = self._columns(fixes)
            self.eta.observe_fixes(code, names, ts, lon, lat, speed)

    def _track_fixes(self, fixes: Sequence[tuple[str, int, float, float, float]]) -> None:
        if fixes:
            code, names, (ts, lon, lat, _speed) = self._columns(fixes)
            self.track.extend(code, names, ts, lon, lat)

    def _where(self, vehicle: str, ts_us: Sequence[int], prefer: Sequence[str]
               ) -> list[tuple[str | None, str | None]]:  # fmt: skip
        """The stop (and its kind) the van was in at each time: the preferred one (the
        parcel's own stop) if it was in it, else the smallest; (None, None) if none."""
        code = self.track.code_of([vehicle])[0]
        out: list[tuple[str | None, str | None]] = [(None, None)] * len(ts_us)
        if code < 0 or not len(self.fences) or not len(ts_us):
            return out
        lon, lat = self.track.position_at(np.full(len(ts_us), code), np.asarray(ts_us))
        fix, fence = self.fences.membership_exit(lon, lat)
        for k in range(len(ts_us)):
            mine = fence[fix == k]
            if not len(mine):
                continue
            ids = self.fences.stop_ids[mine].tolist()
            if prefer[k] in ids:
                j = ids.index(prefer[k])
            else:
                j = int(np.argmin(self.fences.area_m2[mine]))
            out[k] = (ids[j], str(self.fences.kinds[mine[j]]))
        return out

    def _on_cargo(self, c: CargoEvidence) -> ParcelEvents:
        added = self.book.parcels_of_epcs(c.added)
        removed = self.book.parcels_of_epcs(c.removed)
        prefer = [str(self.book.stop_id[r]) if r >= 0 else "" for r in removed.tolist()]
        # The tag went between the last inventory that saw it and the first that missed it;
        # a random miss can make that first one come early. So where the van was then, and
        # where it was at this inventory that confirmed it: its own stop at either wins
        # (stamped when the van was there), then another stop when it was first missed.
        n = len(c.removed)
        first = self._where(c.vehicle_id, c.removed_since_us, prefer)
        now = self._where(c.vehicle_id, [c.ts_us] * n, prefer)
        stops, kinds, times = [], [], []
        for k in range(n):
            (s0, k0), (s1, k1) = first[k], now[k]
            late = s1 is not None and s1 == prefer[k] and s0 != prefer[k]
            stops.append(s1 if late else s0)
            kinds.append(k1 if late else k0)
            times.append(c.ts_us if late else c.removed_since_us[k])
        return self.book.cargo(c.vehicle_id, c.ts_us, added, removed, times, stops, kinds)

    def _on_pod(self, e: PodEvidence) -> ParcelEvents:
        pod = e.pod
        i = self.book.parcel_of_tracking(pod.tracking_number)
        if i < 0:
            return ParcelEvents()
        dist: float | None = None
        code = self.track.code_of([e.vehicle_id])[0]
        fence = self.fences.index_of([str(self.book.stop_id[i])])[0]
        if code >= 0 and fence >= 0:
            lon, lat = self.track.position_at([code], [pod.ts_us])
            d = float(self.fences.distance_m(lon, lat, [fence])[0])
            dist = None if math.isnan(d) else max(d, 0.0)
        return self.book.pod(i, e.vehicle_id, pod.ts_us, pod.outcome == "delivered", dist,
                             pod.reason, pod.signed_by, pod.photo_url)  # fmt: skip

    def _etas(self, vehicles: Sequence[str], newest: np.ndarray, out: ParcelOutput) -> None:
        """Refresh the ETAs of the vans that reported, once in every ETA_EVERY_US of event
        time (slots of the clock, not of the van's last refresh: a van's data held back
        and let go at once is refreshed at the same moments after as if it had not been)."""
        due = {v for v, t in zip(vehicles, newest.tolist(), strict=True)
               if t // ETA_EVERY_US > self._eta_at.get(v, np.iinfo(np.int64).min) // ETA_EVERY_US}
        if not due:
            return
        for v, t in zip(vehicles, newest.tolist(), strict=True):
            if v in due:
                self._eta_at[v] = t
        etas = self.eta.estimate()
        keep = np.isin(etas.vehicle_id, np.array(sorted(due), dtype=np.str_))
        if not keep.any():
            return
        # each van's ETAs are stamped with its own event time, not another van's
        self._apply_etas(etas, keep, dict(zip(vehicles, newest.tolist(), strict=True)), out)

    def _apply_etas(self, etas: Etas, keep: np.ndarray, van_time: dict[str, int],
                    out: ParcelOutput) -> None:  # fmt: skip
        b = self.book
        van_of = np.where(b.vehicle >= 0, b.vehicle, b.planned)
        van_name = np.array([b.vehicle_ids[v] if v >= 0 else "" for v in van_of.tolist()],
                            dtype=np.str_)  # fmt: skip
        open_ = (b.status != DELIVERED) & (van_name != "")
        rows = np.flatnonzero(open_)
        if not len(rows):
            return
        key_p = np.char.add(np.char.add(van_name[rows], "\x00"), b.stop_id[rows])
        key_e = np.char.add(np.char.add(etas.vehicle_id[keep], "\x00"), etas.stop_id[keep])
        order = np.argsort(key_e)
        pos = np.searchsorted(key_e[order], key_p)
        pos = np.minimum(pos, len(key_e) - 1)
        hit = key_e[order][pos] == key_p
        parcels, e = rows[hit], np.flatnonzero(keep)[order[pos[hit]]]
        eta_us = etas.eta_us[e]
        made = np.array([van_time.get(str(v), 0) for v in van_name[parcels].tolist()],
                        dtype=np.int64)  # fmt: skip
        out.events.extend(b.eta(parcels, made, etas.earliest_us[e]))
        moved = np.abs(eta_us - self._eta_last[parcels]) >= ETA_STEP_US
        for p, k, t in zip(parcels[moved].tolist(), e[moved].tolist(), made[moved].tolist(),
                           strict=True):  # fmt: skip
            out.eta_rows.append((t, str(b.tracking_number[p]), int(etas.eta_us[k]),
                                 int(etas.earliest_us[k]), int(etas.latest_us[k]),
                                 float(etas.confidence[k])))  # fmt: skip
        self._eta_last[parcels[moved]] = eta_us[moved]

    def _rows(self, out: ParcelOutput) -> None:
        """parcel_event rows for the events; parcel_latest rows for the parcels they moved."""
        ev = out.events
        self.events_total += len(ev)
        # where each event's van was then: one lookup for all of them (a van leaving the
        # hub moves a hundred parcels at once)
        codes = self.track.code_of([v or "" for v in ev.vehicle_id])
        xs, ys = self.track.position_at(codes,
                                        np.asarray(ev.ts_us, dtype=np.int64))  # fmt: skip
        for k in range(len(ev)):
            vehicle, ts = ev.vehicle_id[k], ev.ts_us[k]
            lon = lat = None
            if codes[k] >= 0 and not math.isnan(xs[k]):
                lon, lat = float(xs[k]), float(ys[k])
            out.event_rows.append((
                ts, event_id(ev.tracking_number[k], ts, ev.status[k], ev.sub_status[k]),
                ev.tracking_number[k], ev.status[k], ev.sub_status[k], vehicle, ev.stop_id[k],
                lon, lat, ev.detail[k],
            ))  # fmt: skip
        b = self.book
        for p in sorted(set(ev.parcel)):
            v = int(b.vehicle[p])
            out.latest_rows.append((
                str(b.tracking_number[p]), int(b.time_us[p]), STATUSES[int(b.status[p])],
                b.sub_status[p],
                b.vehicle_ids[v] if v >= 0 else None, float(b.confidence[p]),
            ))  # fmt: skip
