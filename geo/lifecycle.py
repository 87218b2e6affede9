"""Parcel statuses and exceptions from bindings, geofence events, cargo scans and proofs.

:class:`ParcelBook` holds the day's parcels as arrays (one row per parcel) and turns
evidence into :class:`ParcelEvents`, the rows of ``parcel_event``; the newest per parcel
is ``parcel_latest``. Event time only: every event carries the device or reader time of
the evidence that caused it. Each method is vectorized over the parcels it touches; the
caller feeds evidence in event-time order.

Statuses are AfterShip's tags; sub-statuses AfterShip's codes where one fits, milepost's
own where none does (DESIGN.md, "Parcel lifecycle"). The rules, by evidence:

- **Hub read** (a gate pass at a dock, any direction): ``InfoReceived`` -> ``InTransit``
  (``InTransit_002``, arrived at the hub). An inbound pass (dock -> hall) of a parcel that
  is bound to a van unloads it: unbound, ``InTransit_002`` ("unloaded").
- **Binding** (an outbound pass bound to a van by :mod:`geo.matching`, or the parcel seen
  in a van's cargo scan): bound to the van with the binding's confidence and evidence.
  If the van's route does not serve the parcel's stop: ``Exception_MISLOAD``; else
  ``InTransit_007`` (loaded), or ``OutForDelivery_001`` when the van is already out.
  Binding again to the same van only adds evidence (a cargo sighting raises confidence
  to at least 0.95) and emits nothing. ``Delivered`` parcels are never rebound.
- **Unmatched outbound pass** (no van at the dock, or two): ``Exception_UNBOUND`` with
  the reason, unless the parcel is bound or out already.
- **The van leaves its hub** (EXIT of a ``hub`` stop): every parcel bound to it is *out*;
  those ``InTransit``, back from an ``AttemptFail``, or flagged late, cold or left
  behind become ``OutForDelivery_001``; a mis-load stays an exception. Parcels *planned*
  for the van (its route serves their stop) but bound to no van:
  ``Exception_LEFT_BEHIND`` if the hub had RFID evidence of them (read at the hub:
  ``InTransit`` or ``Exception_UNBOUND``) or the van had any parcel bound by RFID;
  otherwise (no RFID at this hub) they go out with the van by plan:
  bound with confidence 0.3 and evidence ``plan``, ``OutForDelivery_001``.
- **Cargo removal** (a tag leaves the van's debounced inventory; its time is the first
  inventory that missed it) of a parcel bound to the van is *pending* until the van's
  event time is ``removal_confirm_s`` past it (readers miss tags for a while: seen again
  before then, it was never gone). Then, by where the van was: at the parcel's own stop:
  ``Delivered_001``; at a hub or dock: unloaded (unbound, not out; ``InTransit_002``
  unless it never left); anywhere else: ``Exception_WRONG_DROP`` (stop = where, or none).
- **Leaving a stop** after a visit of at least ``attempt_dwell_s`` (EXIT with its dwell):
  the parcels for that stop still bound to the van and out are *pending*; when the van's
  event time passes the exit by ``attempt_grace_s`` (the cargo reader's debounce) and
  they are still bound, out and not delivered: ``AttemptFail_001``. Pending removals are
  settled first. Only for vans that
  send cargo scans: without a reader, what is aboard is not known.
- **Proof of delivery**: ``delivered`` -> ``Delivered_003`` when signed for, else
  ``Delivered_001``; ``failed`` -> ``AttemptFail_001`` with its reason. A proof given
  farther than ``pod_far_m`` from the stop is flagged (``far_from_stop``, ``dist_m``).
- **Sensor reading** out of a parcel's ``[temp_min_c, temp_max_c]`` while it is bound to
  the van: ``Exception_COLD_CHAIN``, once per parcel.
- **ETA**: an undelivered parcel whose window's earliest time is past its promised time:
  ``Exception_LATE``, once per parcel.

``Delivered`` is final. State per parcel: status, sub-status, bound van, confidence,
evidence, out, flags (late, cold) and the time of the last event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

S_US: Final = 1_000_000
NO_TIME: Final = np.iinfo(np.int64).min

STATUSES: Final = ("InfoReceived", "InTransit", "OutForDelivery", "AttemptFail", "Delivered",
                   "Exception", "Expired")  # fmt: skip
INFO, TRANSIT, OUT, ATTEMPT, DELIVERED, EXCEPTION, EXPIRED = range(7)

INFO_RECEIVED: Final = "InfoReceived_001"
AT_HUB: Final = "InTransit_002"
LOADED: Final = "InTransit_007"
OUT_FOR_DELIVERY: Final = "OutForDelivery_001"
ATTEMPT_FAIL: Final = "AttemptFail_001"
DELIVERED_OK: Final = "Delivered_001"
DELIVERED_SIGNED: Final = "Delivered_003"
MISLOAD: Final = "Exception_MISLOAD"
LEFT_BEHIND: Final = "Exception_LEFT_BEHIND"
WRONG_DROP: Final = "Exception_WRONG_DROP"
COLD_CHAIN: Final = "Exception_COLD_CHAIN"
LATE: Final = "Exception_LATE"
UNBOUND: Final = "Exception_UNBOUND"
TRANSIENT_VERSION: Final = 1  # of ParcelBook.transient()'s document

IntpArray = NDArray[np.intp]
Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PlanParcels:
    """The manifest's parcels, one row each."""

    tracking_number: Sequence[str]
    epc: Sequence[str | None]
    stop_id: Sequence[str | None]
    promised_us: Sequence[int | None]
    temp_min_c: Sequence[float | None] = ()
    temp_max_c: Sequence[float | None] = ()


@dataclass(slots=True)
class ParcelEvents:
    """Rows of ``parcel_event``, in the order they happened."""

    parcel: list[int] = field(default_factory=list)  # row in the book
    tracking_number: list[str] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    sub_status: list[str] = field(default_factory=list)
    vehicle_id: list[str | None] = field(default_factory=list)
    stop_id: list[str | None] = field(default_factory=list)
    detail: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.parcel)

    def extend(self, other: ParcelEvents) -> None:
        for name in ParcelEvents.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


class ParcelBook:
    """The day's parcels and their lifecycle; see the module docstring. Not thread-safe."""

    def __init__(self, *, attempt_dwell_s: float = 30.0, attempt_grace_s: float = 120.0,
                 removal_confirm_s: float = 60.0, pod_far_m: float = 150.0) -> None:  # fmt: skip
        self.attempt_dwell_s: Final = attempt_dwell_s
        self.attempt_grace_us: Final = int(attempt_grace_s * S_US)
        self.removal_confirm_us: Final = int(removal_confirm_s * S_US)
        self.pod_far_m: Final = pod_far_m
        self.vehicle_ids: list[str] = []
        self._vcode: dict[str, int] = {}
        self._route_keys: set[tuple[int, str]] = set()
        self._out_vans: set[int] = set()
        self._rfid_vans: set[int] = set()
        self._cargo_vans: set[int] = set()
        self._pending: dict[int, list[tuple[int, int]]] = {}  # van -> [(parcel, exit_us)]
        # van -> [(parcel, first missed, stop, stop kind)]: removals not yet confirmed
        self._removals: dict[int, list[tuple[int, int, str | None, str | None]]] = {}
        self._by_tracking: dict[str, int] = {}
        self._by_epc: dict[str, int] = {}
        self.tracking_number = np.empty(0, np.str_)
        self.stop_id = np.empty(0, np.str_)  # "" when none
        self.promised_us: Int64Array = np.empty(0, np.int64)
        self.temp_min_c: Float64Array = np.empty(0)
        self.temp_max_c: Float64Array = np.empty(0)
        self.planned: IntpArray = np.empty(0, np.intp)  # van whose route serves the stop
        self.status = np.empty(0, np.int8)
        self.sub_status: list[str] = []
        self.vehicle: IntpArray = np.empty(0, np.intp)  # bound van, -1
        self.confidence: Float64Array = np.empty(0)
        self.evidence: list[set[str]] = []
        self.out = np.empty(0, bool)
        self.late = np.empty(0, bool)
        self.cold = np.empty(0, bool)
        self.time_us: Int64Array = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.tracking_number)

    # ------------------------------------------------------------------ the plan

    def _van(self, vehicle_id: str) -> int:
        code = self._vcode.get(vehicle_id)
        if code is None:
            code = self._vcode[vehicle_id] = len(self.vehicle_ids)
            self.vehicle_ids.append(vehicle_id)
        return code

    def set_plan(self, parcels: PlanParcels, routes: Mapping[str, Sequence[str]]) -> None:
        """Load (or reload) the manifest; parcels already known keep their state."""
        n = len(parcels.tracking_number)
        old = self._by_tracking
        self._route_keys = {(self._van(v), s) for v, stops in routes.items() for s in stops}
        planner = {s: self._van(v) for v, stops in routes.items() for s in stops}
        tn = np.array(list(parcels.tracking_number), dtype=np.str_)
        stop = np.array([s or "" for s in parcels.stop_id], dtype=np.str_)
        prev = np.array([old.get(t, -1) for t in tn.tolist()], dtype=np.intp)
        known = prev >= 0
        pk = np.maximum(prev, 0)

        def carry(name: str, fresh: NDArray[Any]) -> NDArray[Any]:
            now = getattr(self, name)
            return np.where(known, now[pk], fresh) if len(now) else fresh

        def col(values: Sequence[float | None]) -> Float64Array:
            v = list(values) or [None] * n
            return np.array([np.nan if x is None else x for x in v], dtype=np.float64)

        status = carry("status", np.full(n, INFO, np.int8)).astype(np.int8)
        sub = [self.sub_status[p] if p >= 0 else INFO_RECEIVED for p in prev.tolist()]
        evidence = [set(self.evidence[p]) if p >= 0 else set() for p in prev.tolist()]
        self.vehicle = carry("vehicle", np.full(n, -1, np.intp)).astype(np.intp)
        self.confidence = carry("confidence", np.zeros(n)).astype(np.float64)
        self.out = carry("out", np.zeros(n, bool)).astype(bool)
        self.late = carry("late", np.zeros(n, bool)).astype(bool)
        self.cold = carry("cold", np.zeros(n, bool)).astype(bool)
        self.time_us = carry("time_us", np.full(n, NO_TIME, np.int64)).astype(np.int64)
        self.status, self.sub_status, self.evidence = status, sub, evidence
        self.tracking_number, self.stop_id = tn, stop
        self.promised_us = np.array([NO_TIME if p is None else p for p in parcels.promised_us],
                                    dtype=np.int64)  # fmt: skip
        self.temp_min_c, self.temp_max_c = col(parcels.temp_min_c), col(parcels.temp_max_c)
        self.planned = np.array([planner.get(s, -1) for s in stop.tolist()], dtype=np.intp)
        self._by_tracking = {t: i for i, t in enumerate(tn.tolist())}
        self._by_epc = {e.upper(): i for i, e in enumerate(parcels.epc) if e}
        remap = {int(p): i for i, p in enumerate(prev.tolist()) if p >= 0}
        self._pending = {v: [(remap[p], t) for p, t in items if p in remap]
                         for v, items in self._pending.items()}  # fmt: skip
        self._removals = {v: [(remap[x[0]], *x[1:]) for x in items if x[0] in remap]
                          for v, items in self._removals.items()}  # fmt: skip

    def seed(self, tracking_number: str, status: str, sub_status: str | None,
             vehicle_id: str | None, time_us: int, late: bool = False,
             cold: bool = False, confidence: float | None = None) -> None:  # fmt: skip
        """Restore a parcel's state from ``parcel_latest`` after a restart; ``late`` and
        ``cold``: whether it was ever flagged so (they fire once per parcel); ``confidence``
        of its binding (None: 0.5 when it has a van)."""
        i = self._by_tracking.get(tracking_number)
        if i is None or status not in STATUSES:
            return
        code = STATUSES.index(status)
        self.status[i] = code
        self.sub_status[i] = sub_status or ""
        self.vehicle[i] = self._van(vehicle_id) if vehicle_id else -1
        self.out[i] = code in (OUT, ATTEMPT) or (code == EXCEPTION and vehicle_id is not None
                                                 and sub_status not in (MISLOAD, UNBOUND))
        self.late[i] = late or sub_status == LATE
        self.cold[i] = cold or sub_status == COLD_CHAIN
        self.confidence[i] = (confidence if confidence is not None
                              else 0.5 if vehicle_id else 0.0)  # fmt: skip
        self.time_us[i] = time_us

    def transient(self) -> dict[str, Any]:
        """What ``seed`` cannot rebuild from parcel_latest: the attempts and cargo removals
        waiting to settle, and which vans are out of their hub, were seen at a gate or have
        a cargo reader; by vehicle id and tracking number, JSON-able, in a stable order."""
        vid, tn = self.vehicle_ids, self.tracking_number

        def vans(codes: set[int]) -> list[str]:
            return sorted(vid[v] for v in codes)

        return {
            "v": TRANSIENT_VERSION,
            "out_vans": vans(self._out_vans), "rfid_vans": vans(self._rfid_vans),
            "cargo_vans": vans(self._cargo_vans),
            "attempts": {str(vid[v]): [[str(tn[i]), t] for i, t in items]
                         for v, items in sorted(self._pending.items()) if items},
            "removals": {str(vid[v]): [[str(tn[x[0]]), *x[1:]] for x in items]
                         for v, items in sorted(self._removals.items()) if items},
        }  # fmt: skip

    def pending_counts(self) -> tuple[int, int]:
        """How many attempts and cargo removals wait to settle."""
        return (sum(map(len, self._pending.values())), sum(map(len, self._removals.values())))

    def restore_transient(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`transient` gave, after ``set_plan`` and ``seed`` (parcels
        no longer in the plan are left out). ValueError: a state of another version."""
        if state.get("v") != TRANSIENT_VERSION:
            raise ValueError(f"state version {state.get('v')!r}, not {TRANSIENT_VERSION}")
        rows = self._by_tracking
        self._out_vans = {self._van(v) for v in state.get("out_vans", ())}
        self._rfid_vans = {self._van(v) for v in state.get("rfid_vans", ())}
        self._cargo_vans = {self._van(v) for v in state.get("cargo_vans", ())}
        self._pending = {self._van(v): [(rows[t], int(ts)) for t, ts in items if t in rows]
                         for v, items in state.get("attempts", {}).items()}  # fmt: skip
        self._removals = {self._van(v): [(rows[x[0]], int(x[1]), x[2], x[3]) for x in items
                                         if x[0] in rows]
                          for v, items in state.get("removals", {}).items()}  # fmt: skip

    def unbound_of_epcs(self, epcs: Sequence[str]) -> list[str]:
        """The EPCs of ``epcs`` whose parcels are bound to no van and not delivered: aboard
        a van, they are its (a tag first seen before its parcel was in the plan)."""
        out = []
        for e in epcs:
            i = self._by_epc.get(e.upper(), -1)
            if i >= 0 and self.vehicle[i] < 0 and self.status[i] != DELIVERED:
                out.append(e)
        return out

    def parcels_of_epcs(self, epcs: Sequence[str]) -> IntpArray:
        """Book row of each EPC (any case), -1 for a tag that is no parcel of the day."""
        return np.array([self._by_epc.get(e.upper(), -1) for e in epcs], dtype=np.intp)

    def parcel_of_tracking(self, tracking_number: str) -> int:
        return self._by_tracking.get(tracking_number, -1)

    def serves(self, vehicle_id: str, stop_id: str) -> bool:
        code = self._vcode.get(vehicle_id)
        return code is not None and (code, stop_id) in self._route_keys

    # ------------------------------------------------------------------ evidence

    def hub_read(self, parcel: ArrayLike, ts_us: ArrayLike, inbound: ArrayLike) -> ParcelEvents:
        p, t = _rows(parcel, ts_us)
        inb = np.broadcast_to(np.asarray(inbound, dtype=bool), p.shape)
        ev = ParcelEvents()
        first = self.status[p] == INFO
        self._emit(ev, p[first], t[first], TRANSIT, AT_HUB, {"evidence": "gate"})
        unload = inb & ~first & (self.vehicle[p] >= 0) & (self.status[p] != DELIVERED)
        self._unload(ev, p[unload], t[unload])
        return ev

    def bind(self, parcel: ArrayLike, vehicle_id: Sequence[str], ts_us: ArrayLike,
             confidence: ArrayLike, evidence: Sequence[str]) -> ParcelEvents:  # fmt: skip
        """Bind each parcel to its van (``evidence``: "gate", "cargo", "pod"...)."""
        p, t = _rows(parcel, ts_us)
        conf = np.broadcast_to(np.asarray(confidence, dtype=np.float64), p.shape)
        ev = ParcelEvents()
        for k in range(len(p)):  # bindings are a few per pass batch, not per read
            i, v = int(p[k]), self._van(vehicle_id[k])
            if self.status[i] == DELIVERED:
                continue
            if evidence[k] != "plan":
                self._rfid_vans.add(v)
            if self.vehicle[i] == v:
                self.evidence[i].add(evidence[k])
                boost = 0.95 if evidence[k] == "cargo" else 0.0
                self.confidence[i] = max(self.confidence[i], float(conf[k]), boost)
                continue
            self.vehicle[i] = v
            self.confidence[i] = float(conf[k])
            self.evidence[i] = {evidence[k]}
            out = v in self._out_vans
            self.out[i] = out
            detail = {"evidence": evidence[k], "confidence": round(float(conf[k]), 3)}
            if not (self.stop_id[i] and (v, str(self.stop_id[i])) in self._route_keys):
                self._emit(ev, p[k:k + 1], t[k:k + 1], EXCEPTION, MISLOAD, detail)
            elif out:
                self._emit(ev, p[k:k + 1], t[k:k + 1], OUT, OUT_FOR_DELIVERY, detail)
            else:
                self._emit(ev, p[k:k + 1], t[k:k + 1], TRANSIT, LOADED, detail)
        return ev

    def unbound(self, parcel: ArrayLike, ts_us: ArrayLike, reason: Sequence[str],
                candidates: ArrayLike) -> ParcelEvents:  # fmt: skip
        p, t = _rows(parcel, ts_us)
        cand = np.broadcast_to(np.asarray(candidates, dtype=np.intp), p.shape)
        ok = (self.vehicle[p] < 0) & ~self.out[p] & np.isin(self.status[p], (INFO, TRANSIT))
        ev = ParcelEvents()
        for k in np.flatnonzero(ok).tolist():
            self._emit(ev, p[k:k + 1], t[k:k + 1], EXCEPTION, UNBOUND,
                       {"reason": reason[k], "candidates": int(cand[k])})
        return ev

    def departed_hub(self, vehicle_id: str, ts_us: int) -> ParcelEvents:
        v = self._van(vehicle_id)
        self._out_vans.add(v)
        ev = ParcelEvents()
        mine = self.vehicle == v
        self.out[mine] = True
        go = mine & (np.isin(self.status, (TRANSIT, ATTEMPT))
                     | ((self.status == EXCEPTION) & ~self._sub_is(MISLOAD, WRONG_DROP)))
        idx = np.flatnonzero(go)
        self._emit(ev, idx, np.full(len(idx), ts_us), OUT, OUT_FOR_DELIVERY,
                   {"evidence": "hub_exit"})
        planned = (self.planned == v) & (self.vehicle < 0) & (self.status != DELIVERED)
        seen = (self.status == TRANSIT) | ((self.status == EXCEPTION) & self._sub_is(UNBOUND))
        rfid = v in self._rfid_vans
        behind = np.flatnonzero(planned & (seen | rfid) & ~self._sub_is(LEFT_BEHIND))
        self._emit(ev, behind, np.full(len(behind), ts_us), EXCEPTION, LEFT_BEHIND,
                   {"planned_vehicle_id": vehicle_id})
        by_plan = np.flatnonzero(planned & ~(seen | rfid) & (self.status == INFO))
        self.vehicle[by_plan], self.confidence[by_plan], self.out[by_plan] = v, 0.3, True
        for i in by_plan.tolist():
            self.evidence[i] = {"plan"}
        self._emit(ev, by_plan, np.full(len(by_plan), ts_us), OUT, OUT_FOR_DELIVERY,
                   {"evidence": "plan", "confidence": 0.3}, vehicle=v)
        return ev

    def arrived_hub(self, vehicle_id: str) -> None:
        self._out_vans.discard(self._van(vehicle_id))

    def cargo(self, vehicle_id: str, ts_us: int, added: ArrayLike, removed: ArrayLike,
              removed_us: ArrayLike, removed_stop: Sequence[str | None],
              removed_kind: Sequence[str | None]) -> ParcelEvents:  # fmt: skip
        """A cargo inventory's changes (book rows; -1 rows ignored); each removal with the
        time it was first missed and the stop (and its kind) the van was in then."""
        v = self._van(vehicle_id)
        self._cargo_vans.add(v)
        a = np.asarray(added, dtype=np.intp).reshape(-1)
        a = a[a >= 0]
        ev = self.bind(a, [vehicle_id] * len(a), np.full(len(a), ts_us), 0.8, ["cargo"] * len(a))
        seen = set(a.tolist())
        pending = self._removals.get(v, [])
        pending[:] = [x for x in pending if x[0] not in seen]  # seen again: a missed read
        r = np.asarray(removed, dtype=np.intp).reshape(-1)
        rt = np.asarray(removed_us, dtype=np.int64).reshape(-1)
        for k in np.flatnonzero(r >= 0).tolist():
            i = int(r[k])
            if self.vehicle[i] == v and self.status[i] != DELIVERED:
                pending.append((i, int(rt[k]), removed_stop[k], removed_kind[k]))
        self._removals[v] = pending
        ev.extend(self.advance(vehicle_id, ts_us))
        return ev

    def _settle_removal(self, ev: ParcelEvents, v: int, i: int, when: int, stop: str | None,
                        kind: str | None) -> None:  # fmt: skip
        if self.vehicle[i] != v or self.status[i] == DELIVERED:
            return
        one, at = np.array([i]), np.array([when])
        if stop and stop == self.stop_id[i]:
            self.out[i] = False
            self._emit(ev, one, at, DELIVERED, DELIVERED_OK, {"evidence": "cargo"})
        elif kind in ("hub", "dock"):
            self._unload(ev, one, at)
        else:
            self.out[i] = False
            self.vehicle[i] = -1
            self._emit(ev, one, at, EXCEPTION, WRONG_DROP,
                       {"evidence": "cargo", "at_stop_id": stop}, stop=stop or None, vehicle=v)

    def left_stop(self, vehicle_id: str, stop_id: str, ts_us: int, dwell_s: float) -> None:
        v = self._van(vehicle_id)
        if v not in self._cargo_vans or not dwell_s >= self.attempt_dwell_s:
            return
        here = np.flatnonzero((self.vehicle == v) & self.out & (self.stop_id == stop_id)
                              & (self.status != DELIVERED))  # fmt: skip
        self._pending.setdefault(v, []).extend((int(i), ts_us) for i in here.tolist())

    def advance(self, vehicle_id: str, ts_us: int) -> ParcelEvents:
        """The van's event time moved to ``ts_us``: settle the removals and the attempts it
        has outgrown (removals first: a parcel taken out at its stop is no failed attempt)."""
        ev = ParcelEvents()
        v = self._vcode.get(vehicle_id)
        if v is None:
            return ev
        removals = self._removals.get(v, [])
        if removals:
            due_r = [x for x in removals if ts_us - x[1] >= self.removal_confirm_us]
            removals[:] = [x for x in removals if ts_us - x[1] < self.removal_confirm_us]
            for i, when, stop, kind in sorted(due_r, key=lambda x: x[1]):
                self._settle_removal(ev, v, i, when, stop, kind)
        items = self._pending.get(v, [])
        if not items:
            return ev
        due = [(i, t) for i, t in items if ts_us - t >= self.attempt_grace_us]
        self._pending[v] = [(i, t) for i, t in items if ts_us - t < self.attempt_grace_us]
        for i, t in due:
            if self.vehicle[i] == v and self.out[i] and self.status[i] not in (DELIVERED, ATTEMPT):
                self._emit(ev, np.array([i]), np.array([t]), ATTEMPT, ATTEMPT_FAIL,
                           {"evidence": "cargo", "reason": "left the stop with the parcel aboard"})
        return ev

    def pod(self, parcel: int, vehicle_id: str, ts_us: int, delivered: bool,
            dist_m: float | None, reason: str | None = None, signed_by: str | None = None,
            photo_url: str | None = None) -> ParcelEvents:  # fmt: skip
        ev = ParcelEvents()
        if parcel < 0 or self.status[parcel] == DELIVERED:
            return ev
        v = self._van(vehicle_id)
        self.vehicle[parcel] = v
        self.evidence[parcel].add("pod")
        detail: dict[str, Any] = {"evidence": "pod"}
        for key, value in (("reason", reason), ("signed_by", signed_by), ("photo_url", photo_url)):
            if value:
                detail[key] = value
        if dist_m is not None:
            detail["dist_m"] = round(dist_m, 1)
            if dist_m > self.pod_far_m:
                detail["far_from_stop"] = True
        one = np.array([parcel])
        if delivered:
            self.out[parcel] = False
            self._emit(ev, one, np.array([ts_us]), DELIVERED,
                       DELIVERED_SIGNED if signed_by else DELIVERED_OK, detail)
        else:
            self._emit(ev, one, np.array([ts_us]), ATTEMPT, ATTEMPT_FAIL, detail)
        return ev

    def sensor(self, vehicle_id: str, ts_us: int, temp_c: float) -> ParcelEvents:
        ev = ParcelEvents()
        v = self._vcode.get(vehicle_id)
        if v is None or not np.isfinite(temp_c):
            return ev
        bad = ((self.vehicle == v) & (self.status != DELIVERED) & ~self.cold
               & ((temp_c < self.temp_min_c) | (temp_c > self.temp_max_c)))  # NaN: no range
        idx = np.flatnonzero(bad)
        self.cold[idx] = True
        self._emit(ev, idx, np.full(len(idx), ts_us), EXCEPTION, COLD_CHAIN, {"temp_c": temp_c})
        return ev

    def eta(self, parcel: ArrayLike, ts_us: ArrayLike, earliest_us: ArrayLike) -> ParcelEvents:
        """ETA windows (``ts_us``: when each was made, its van's event time)."""
        p = np.asarray(parcel, dtype=np.intp).reshape(-1)
        e = np.asarray(earliest_us, dtype=np.int64).reshape(-1)
        t = np.broadcast_to(np.asarray(ts_us, dtype=np.int64), p.shape)
        late = ((self.promised_us[p] != NO_TIME) & (e > self.promised_us[p]) & ~self.late[p]
                & (self.status[p] != DELIVERED))  # fmt: skip
        idx, over, when = p[late], e[late] - self.promised_us[p][late], t[late]
        self.late[idx] = True
        ev = ParcelEvents()
        late_by = {int(i): round(int(o) / S_US)
                   for i, o in zip(idx.tolist(), over.tolist(), strict=True)}
        self._emit(ev, idx, when, EXCEPTION, LATE, {"evidence": "eta"},
                   per_row=lambda i: {"late_by_s": late_by[i]})
        return ev

    # ------------------------------------------------------------------ internals

    def _sub_is(self, *subs: str) -> BoolArray:
        return np.array([s in subs for s in self.sub_status], dtype=bool)

    def _unload(self, ev: ParcelEvents, p: IntpArray, t: Int64Array) -> None:
        """Back in the hub: unbound, not out; an event unless it never left the hall."""
        self.vehicle[p], self.out[p], self.confidence[p] = -1, False, 0.0
        for i in p.tolist():
            self.evidence[i] = set()
        news = ~((self.status[p] == TRANSIT) & self._sub_is(AT_HUB)[p])
        self._emit(ev, p[news], t[news], TRANSIT, AT_HUB, {"evidence": "unloaded"})

    def _emit(self, ev: ParcelEvents, p: IntpArray, t: Int64Array, status: int, sub: str,
              detail: dict[str, Any], *, stop: str | None = None, vehicle: int | None = None,
              per_row: Callable[[int], dict[str, Any]] | None = None) -> None:  # fmt: skip
        if len(p) == 0:
            return
        self.status[p] = status
        self.time_us[p] = np.maximum(self.time_us[p], t)
        for k, i in enumerate(p.tolist()):
            self.sub_status[i] = sub
            van = int(self.vehicle[i]) if vehicle is None else vehicle
            ev.parcel.append(i)
            ev.tracking_number.append(str(self.tracking_number[i]))
            ev.ts_us.append(int(t[k]))
            ev.status.append(STATUSES[status])
            ev.sub_status.append(sub)
            ev.vehicle_id.append(self.vehicle_ids[van] if van >= 0 else None)
            ev.stop_id.append(stop if stop is not None else (str(self.stop_id[i]) or None))
            ev.detail.append(dict(detail) if per_row is None else {**detail, **per_row(i)})


def _rows(parcel: ArrayLike, ts_us: ArrayLike) -> tuple[IntpArray, Int64Array]:
    p = np.asarray(parcel, dtype=np.intp).reshape(-1)
    t = np.broadcast_to(np.asarray(ts_us, dtype=np.int64), p.shape).astype(np.int64)
    keep = p >= 0
    return p[keep], t[keep]
