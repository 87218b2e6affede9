"""The processing of one drained batch, in its order (pure: no I/O).

:class:`Pipeline` owns the stateful stages: gate passes (:mod:`ingest.passes`), the
fixes' validation (:data:`ingest.stages.STAGES`), geofence transitions
(:mod:`geo.transitions`), cargo inventories (:mod:`ingest.cargo`) and the parcel stage
(:mod:`ingest.parcels`), with the vans' clock offsets (:mod:`ingest.clocks`) and the
hold for late data (:mod:`ingest.hold`) in front. :meth:`Pipeline.process` runs them
over a :class:`Drained` batch and fills its ``rows`` (table -> rows, statements in
:data:`TABLE_INSERTS`); ``milepost ingest`` writes them in the batch's transaction, a
replay or a benchmark may just read them. The order, once: validate and dedupe fixes ->
the vans' clock offsets (the fixes stored with them corrected) -> late data held back,
what goes now corrected (fixes, inventories, readings, proofs) -> inventories -> passes
-> geofence events -> bindings, parcel events and ETAs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from psycopg.types.json import Jsonb

from devices.epc import decode_epc
from devices.fleet import CargoScan, SensorReading
from geo.fences import FenceSet
from geo.transitions import Events, TransitionTracker
from ingest import webhooks
from ingest.batch import Drained, FixFrame
from ingest.cargo import CargoTracker
from ingest.clocks import ClockChange, ClockTracker
from ingest.hold import LATE_US, Admitted, BacklogHold
from ingest.parcels import CargoEvidence, ParcelStage, Plan, PodEvidence, SensorEvidence
from ingest.passes import Passes, PassTracker, Reads
from ingest.stages import StageResult, run_stages
from ingest.writer import datetime_to_us, newest_per_vehicle, us_to_datetime

log = logging.getLogger(__name__)

TABLE_INSERTS: dict[str, str] = {
    "geofence": "INSERT INTO geofence_event (time, vehicle_id, stop_id, kind, dwell_s)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "at_stop": "UPDATE vehicle_latest SET stop_id = %s WHERE vehicle_id = %s",
    "pass": "INSERT INTO gate_pass (time, gate_id, epc, last_seen, direction, reads, peak_rssi,"
            " epc_urn, confidence, sequence, vehicle_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "cargo": "INSERT INTO cargo_scan (time, vehicle_id, epcs, added, removed, aboard)"
             " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "sensor": "INSERT INTO sensor_reading (time, vehicle_id, temp_c, humidity)"
              " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "parcel_event": "INSERT INTO parcel_event (time, event_id, tracking_number, status,"
                    " sub_status, vehicle_id, stop_id, lon, lat, detail)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    # the book is the one authority on a parcel's state: its newest state wins
    "parcel_latest": "INSERT INTO parcel_latest AS l (tracking_number, time, status, sub_status,"
                     " vehicle_id, confidence) VALUES (%s, %s, %s, %s, %s, %s)"
                     " ON CONFLICT (tracking_number) DO UPDATE SET time = excluded.time,"
                     " status = excluded.status, sub_status = excluded.sub_status,"
                     " vehicle_id = excluded.vehicle_id, confidence = excluded.confidence,"
                     " updated_at = now()",
    "eta_snapshot": "INSERT INTO eta_snapshot (time, tracking_number, eta, eta_earliest,"
                    " eta_latest, confidence) SELECT * FROM unnest(%s::timestamptz[],"
                    " %s::text[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[],"
                    " %s::float8[])",
    "pod_done": "UPDATE pod_inbox SET processed_at = now() WHERE pod_id = %s",
    "fix_done": "UPDATE fix_inbox SET processed_at = now() WHERE inbox_id = %s",
    "webhook_outbox": webhooks.OUTBOX_SQL,
    # the live stream (GET /v1/live): sent by PostgreSQL when the batch commits
    "live": "SELECT pg_notify('milepost_live', %s)",
    "eta_latest": "UPDATE parcel_latest AS l SET eta = u.eta, eta_earliest = u.lo,"
                  " eta_latest = u.hi, eta_confidence = u.c, updated_at = now()"
                  " FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[],"
                  " %s::timestamptz[], %s::float8[]) AS u (tn, eta, lo, hi, c)"
                  " WHERE l.tracking_number = u.tn",
    # the parcel stage's state between events (ParcelBook.transient), when it changed
    "ingest_state": "INSERT INTO ingest_state (instance, name, state) VALUES (%s, %s, %s::jsonb)"
                    " ON CONFLICT (instance, name) DO UPDATE SET state = excluded.state,"
                    " updated_at = now()",
}  # fmt: skip
PARCEL_STATE = "parcels"  # its name in ingest_state
GEOFENCE_STATE = "geofences"  # the geofence tracker's (TransitionTracker.snapshot)
ETA_STATE = "etas"  # the ETA estimator's (ParcelStage.eta_state)
CLOCK_STATE = "clocks"  # the vans' clock offsets (ClockTracker.state)
HOLD_STATE = "held"  # late data held back (BacklogHold.state)
# an ETA state this small is written with every batch that changed it; a larger one (a
# fleet of hundreds of vans) at most every so much receipt time, and a restart catches up
# from the fixes and geofence events stored since (ParcelStage.restore_eta)
ETA_STATE_SMALL = 256 * 1024
ETA_STATE_EVERY_US = 60 * 1_000_000


def _log_clock(c: ClockChange) -> None:
    if c.offset_us:
        log.warning("%s: its clock is %.0f s %s the fleet's; its times are corrected by"
                    " %+.0f s (was %+.0f s)", c.vehicle_id, abs(c.offset_us) / 1e6,
                    "ahead of" if c.offset_us > 0 else "behind", -c.offset_us / 1e6,
                    -c.was_us / 1e6)  # fmt: skip
    else:
        log.info("%s: its clock agrees with the fleet's again; its times are used as they"
                 " come (were corrected by %+.0f s)", c.vehicle_id, -c.was_us / 1e6)


def pass_rows(p: Passes, vehicles: Sequence[str | None] = ()) -> list[tuple[Any, ...]]:
    """gate_pass rows, with each EPC decoded to its GS1 pure identity where it has one, and
    the van each pass was bound to (``vehicles``, one per pass, when known)."""
    rows = []
    for i in range(len(p)):
        epc = str(p.epc[i])
        peak = float(p.peak_rssi[i])
        rows.append((
            us_to_datetime(int(p.first_us[i])), str(p.gate_id[i]), epc,
            us_to_datetime(int(p.last_us[i])), str(p.direction[i]), int(p.reads[i]),
            None if math.isnan(peak) else peak, decode_epc(epc).pure_identity_urn,
            float(p.confidence[i]), str(p.sequence[i]), vehicles[i] if vehicles else None,
        ))  # fmt: skip
    return rows


LIVE_CHANNEL = "milepost_live"
INBOX_CHANNEL = "milepost_inbox"  # the API stored a row in fix_inbox: ingest reads it now
LIVE_MAX_BYTES = 7000  # a NOTIFY payload must stay under 8000 bytes


def live_messages(frame: FixFrame, rows: Mapping[str, Sequence[tuple[Any, ...]]]) -> list[str]:
    """The batch's newest position per van and its parcel events, as JSON texts for
    ``pg_notify`` (``{"positions": [[vehicle, time, lon, lat, speed, heading]],
    "parcels": [[event_id, tracking_number, time, status, sub_status, vehicle, stop]]}``),
    split to fit a notification."""
    items: list[tuple[str, list[Any]]] = []
    if len(frame):
        f = frame.fix[newest_per_vehicle(frame)]
        vans = frame.vehicle[newest_per_vehicle(frame)]
        for row, code in zip(f.tolist(), vans.tolist(), strict=True):
            ts, lon, lat, speed, heading = row[0], row[1], row[2], row[3], row[4]
            items.append(("positions", [frame.vehicles[code], ts, round(lon, 7), round(lat, 7),
                                        None if speed != speed else round(speed, 2),
                                        None if heading != heading else round(heading, 1)]))
    for e in rows.get("parcel_event", ()):
        items.append(("parcels", [str(e[1]), e[2], datetime_to_us(e[0]), e[3], e[4], e[5], e[6]]))
    out: list[str] = []
    doc: dict[str, list[Any]] = {}
    size = 0
    for key, item in items:
        text = orjson.dumps(item)
        if size + len(text) > LIVE_MAX_BYTES and doc:
            out.append(orjson.dumps(doc).decode())
            doc, size = {}, 0
        doc.setdefault(key, []).append(item)
        size += len(text) + 1
    if doc:
        out.append(orjson.dumps(doc).decode())
    return out


class Pipeline:
    """See the module docstring. Not thread-safe: one ingest loop owns it."""

    def __init__(self, instance: str = "") -> None:
        self.passes = PassTracker({})
        self.transitions = TransitionTracker(FenceSet.empty())
        self.cargo = CargoTracker()
        self.parcels = ParcelStage()
        self.clocks = ClockTracker()
        self.hold = BacklogHold()
        self.instance = instance  # whose row of ingest_state this pipeline writes
        self._roles: dict[tuple[str, int], str] = {}
        self._state_written = b""
        self._clocks_written: dict[str, Any] = self.clocks.state()
        self._hold_written = self.hold.changes
        self._now_us = 0  # the newest receipt time seen (a batch's, or the clock's)
        self._geo_snapshot: object = None  # the tracker's snapshot last written
        # the ETA state last written: the estimator's change count, event time and size
        self._eta_changes, self._eta_at_us, self._eta_size = -1, 0, 0
        self.eta_small, self.eta_every_us = ETA_STATE_SMALL, ETA_STATE_EVERY_US

    def restore_state(self, state: Mapping[str, Any] | None) -> None:
        """After a restart, with the plan loaded and parcel_latest seeded: the parcel
        stage's state between events as the last committed batch left it."""
        if state:
            self.parcels.book.restore_transient(state)
            self._state_written = orjson.dumps(self.parcels.book.transient())

    def restore_geofences(self, snapshot: Mapping[str, Any],
                          last: Mapping[str, tuple[int, float, float]]) -> int:  # fmt: skip
        """After a restart, with the fences set: the geofence tracker's visits in progress
        as the last committed batch left them (``last``: each van's newest fix, from
        vehicle_latest). Returns the visits and runs restored."""
        n = self.transitions.restore(snapshot, last)
        self._geo_snapshot = self.transitions.snapshot()  # what the row holds already
        return n

    def restore_etas(self, state: Any, fixes: Sequence[tuple[str, int, float, float, float]],
                     fences: Sequence[tuple[int, str, str, str]]) -> int:  # fmt: skip
        """After a restart, with the plan set and the parcel stage restored: the ETA
        estimator as the last ETA state left it, caught up with the fixes and geofence
        events stored since (see ParcelStage.restore_eta). Returns the vans restored."""
        n = self.parcels.restore_eta(state, fixes, fences)
        self._eta_changes = self.parcels.eta.changes  # (a catch-up is written with the next)
        self._eta_at_us = self._eta_size = 0
        return n

    def restore_clocks(self, state: Mapping[str, Any]) -> int:
        """After a restart, before any batch: the vans' clock offsets as the last committed
        batch left them (a redelivered fix gets the time it got). Returns the vans."""
        n = self.clocks.restore(state)
        self._clocks_written = self.clocks.state()
        return n

    def restore_hold(self, state: Mapping[str, Any]) -> int:
        """After a restart, before any batch: the late data held back as the last committed
        batch left it. Returns the vans."""
        n = self.hold.restore(state)
        self._hold_written = self.hold.changes
        return n

    def set_roles(self, roles: Mapping[tuple[str, int], str]) -> None:
        """The gates' antenna roles, (gate_id, antenna) -> "hall" | "dock"."""
        if roles != self._roles:
            self.passes.set_roles(roles)
            self._roles = dict(roles)

    def set_fences(self, fences: FenceSet) -> None:
        self.transitions.set_fences(fences)

    def set_plan(self, plan: Plan) -> bool:
        """The manifest's parcels, routes, gates and tags (after :meth:`set_fences`)."""
        return self.parcels.set_plan(plan, self.transitions.fences)

    def cargo_row(self, vehicle: str, scan: CargoScan
                  ) -> tuple[tuple[Any, ...], CargoEvidence | None]:  # fmt: skip
        """The cargo_scan row of an inventory, and what it changed for the parcel stage.

        Inventories go through here in event time: a batch hands them over as
        ``evidence["scans"]`` (``(vehicle, scan)`` in arrival order), and :meth:`process`
        sorts them first (a backlog flushed out of order is news, not late news)."""
        change = self.cargo.update(vehicle, scan.ts_us, set(scan.epcs))
        late = change.late
        row = (us_to_datetime(scan.ts_us), vehicle, list(scan.epcs),
               None if late else list(change.added), None if late else list(change.removed),
               None if late else list(change.aboard))  # fmt: skip
        if late:
            return row, None
        # a parcel aboard and bound to no van is the van's too: its tag was "added" before
        # the parcel was in the plan (a manifest stored just before), or lost its binding
        new = set(change.added)
        unbound = self.parcels.book.unbound_of_epcs([e for e in change.aboard if e not in new])
        if not (change.added or change.removed or unbound):
            return row, None
        return row, CargoEvidence(vehicle, scan.ts_us, change.added + tuple(unbound),
                                  change.removed, change.removed_since_us)  # fmt: skip

    @staticmethod
    def sensor_row(vehicle: str, r: SensorReading
                   ) -> tuple[tuple[Any, ...], SensorEvidence | None]:  # fmt: skip
        """The sensor_reading row of a reading, and the temperature for the parcel stage."""
        row = (us_to_datetime(r.ts_us), vehicle, None if math.isnan(r.temp_c) else r.temp_c,
               None if math.isnan(r.humidity) else r.humidity)  # fmt: skip
        return row, None if math.isnan(r.temp_c) else SensorEvidence(vehicle, r.ts_us, r.temp_c)

    def flush_passes(self, now_us: int | None) -> Passes:
        """Close the passes of gates gone quiet (see :meth:`PassTracker.flush`); hand them
        to the next batch as ``evidence["passes"]``."""
        return self.passes.flush(now_us)

    def process(self, drained: Drained) -> StageResult:
        """Run every stage over the batch; fill ``drained.rows``; return the valid fixes and
        the rejected ones (for dead_letter)."""
        result = run_stages(drained.fixes)
        raw = result.frame
        late = self._clocks_of(raw)
        result.frame = self._corrected(raw)  # stored with this batch
        ev = drained.evidence
        now_us = max([self._now_us, *ev.pop("clock", []),
                      int(raw.received_us.max()) if len(raw) else 0])  # fmt: skip
        self._now_us = now_us
        got = self.hold.admit(raw, late, ev.pop("scans", []), ev.pop("sensor", []),
                              ev.pop("pod", []), now_us)  # fmt: skip
        for van in got.released:
            log.info("%s: its late data goes to the stages in time order", van)
        frame = self._evidence_into(drained, got)
        self._cargo_into(drained)
        passes = self._passes_of(drained)
        events = self._transitions_into(drained, frame)
        self._parcels_into(drained, frame, passes, events)
        self._state_into(drained, tracked=bool(len(frame) and len(self.transitions.fences)),
                         received_us=now_us if len(drained.fixes) else None)  # fmt: skip
        drained.rows["live"] = [(m,) for m in live_messages(result.frame, drained.rows)]
        return result

    def _clocks_of(self, frame: FixFrame) -> NDArray[np.bool_]:
        """The vans' clock offsets, updated from the batch's valid fixes (ingest/clocks.py);
        returns which fixes came late (ingest/hold.py), by the offsets now."""
        if not len(frame):
            return np.zeros(0, np.bool_)
        clocks = self.clocks
        for change in clocks.observe(frame.vehicles, frame.vehicle, frame.fix["ts_us"],
                                     frame.received_us):  # fmt: skip
            _log_clock(change)
        lag = frame.received_us - frame.fix["ts_us"] + self._offsets(frame)
        late: NDArray[np.bool_] = lag - clocks.reference_us > LATE_US
        if undecided := clocks.undecided():  # their clock looks off, not believed yet
            codes = [k for k, v in enumerate(frame.vehicles) if v in undecided]
            late |= np.isin(frame.vehicle, codes)
        return late

    def _offsets(self, frame: FixFrame) -> NDArray[np.int64]:
        of = self.clocks.offset_of
        per_van = np.fromiter((of(v) for v in frame.vehicles), np.int64, len(frame.vehicles))
        off: NDArray[np.int64] = per_van[frame.vehicle]
        return off

    def _corrected(self, frame: FixFrame) -> FixFrame:
        """The fixes with their vans' clocks set right (the offsets in ``clock_us``)."""
        if not self.clocks.offsets or not len(frame):
            return frame
        off = self._offsets(frame)
        if not off.any():
            return frame
        fix = frame.fix.copy()
        fix["ts_us"] -= off
        return FixFrame(fix, frame.vehicle, frame.received_us, frame.vehicles, off)

    def _evidence_into(self, drained: Drained, got: Admitted) -> FixFrame:
        """What the hold let through, with the vans' clocks set right: inventories,
        readings and proofs into ``drained.evidence``; the fixes returned. The batch's
        sensor_reading rows are corrected as they are written. Gate reads are stamped by
        the host and stay as they are."""
        ev, of = drained.evidence, self.clocks.offset_of
        if got.scans:
            ev["scans"] = [(v, dataclasses.replace(s, ts_us=s.ts_us - of(v)) if of(v) else s)
                           for v, s in got.scans]  # fmt: skip
        if got.sensor:
            ev["sensor"] = [dataclasses.replace(r, ts_us=r.ts_us - of(r.vehicle_id))
                            if of(r.vehicle_id) else r for r in got.sensor]  # fmt: skip
        if got.pods:
            ev["pod"] = [PodEvidence(p.vehicle_id, dataclasses.replace(
                p.pod, ts_us=p.pod.ts_us - of(p.vehicle_id))) if of(p.vehicle_id) else p
                for p in got.pods]  # fmt: skip
        if self.clocks.offsets and (rows := drained.rows.get("sensor")):
            drained.rows["sensor"] = [  # (time, vehicle, temp_c, humidity)
                (us_to_datetime(datetime_to_us(r[0]) - of(r[1])), *r[1:]) if of(r[1]) else r
                for r in rows]  # fmt: skip
        return self._corrected(got.frame)

    def _cargo_into(self, drained: Drained) -> None:
        """The batch's inventories (``evidence["scans"]``), in event time (per van, ties in
        arrival order): their cargo_scan rows, and what they changed as ``evidence["cargo"]``."""
        scans: list[tuple[str, CargoScan]] = drained.evidence.pop("scans", [])
        if not scans:
            return
        rows = drained.rows.setdefault("cargo", [])
        changes = drained.evidence.setdefault("cargo", [])
        for vehicle, scan in sorted(scans, key=lambda x: x[1].ts_us):  # stable
            row, change = self.cargo_row(vehicle, scan)
            rows.append(row)
            if change is not None:
                changes.append(change)

    def _transitions_into(self, drained: Drained, frame: FixFrame) -> Events:
        """Geofence enter / dwell / exit from the batch's valid fixes, in event time."""
        if not len(frame) or not len(self.transitions.fences):
            return Events.empty()
        f = frame.fix
        events = self.transitions.update(frame.vehicle, frame.vehicles, f["ts_us"],
                                         f["lon_deg"], f["lat_deg"])  # fmt: skip
        rows = drained.rows.setdefault("geofence", [])
        for i in range(len(events)):
            dwell = float(events.dwell_s[i])
            rows.append((us_to_datetime(int(events.ts_us[i])), str(events.vehicle_id[i]),
                         str(events.stop_id[i]), str(events.kind[i]),
                         None if math.isnan(dwell) else dwell))  # fmt: skip
        inside = self.transitions.inside()
        drained.rows.setdefault("at_stop", []).extend(
            (inside.get(v), v) for v in frame.vehicles)
        return events

    def _parcels_into(self, drained: Drained, frame: FixFrame, passes: Passes,
                      events: Events) -> None:  # fmt: skip
        """Bindings, parcel events and ETAs of the batch, written with it."""
        ev = drained.evidence
        out = self.parcels.process(frame, drained.reads, passes, events, ev.get("cargo", []),
                                   ev.get("sensor", []), ev.get("pod", []))  # fmt: skip
        drained.rows.setdefault("pass", []).extend(pass_rows(passes, out.pass_vehicle))
        rows = drained.rows
        rows["parcel_event"] = [
            (us_to_datetime(r[0]), *r[1:9], Jsonb(r[9])) for r in out.event_rows]
        rows["parcel_latest"] = [(r[0], us_to_datetime(r[1]), *r[2:]) for r in out.latest_rows]
        if out.eta_rows:
            cols = list(zip(*out.eta_rows, strict=True))
            t, tn, eta, lo, hi, conf = cols
            dt = [us_to_datetime(x) for x in t]
            e, a, b = ([us_to_datetime(x) for x in c] for c in (eta, lo, hi))
            rows["eta_snapshot"] = [(dt, list(tn), e, a, b, list(conf))]
            rows["eta_latest"] = [(list(tn), e, a, b, list(conf))]
        # the webhooks of these events, in the same transaction (ingest/webhooks.py)
        etas = (list(zip(rows["eta_snapshot"][0][0], rows["eta_snapshot"][0][1],
                         *rows["eta_snapshot"][0][2:], strict=True))
                if out.eta_rows else [])  # fmt: skip
        rows["webhook_outbox"] = webhooks.outbox_rows(rows["parcel_event"], etas)

    def _state_into(self, drained: Drained, tracked: bool, received_us: int | None) -> None:
        """The stages' state between batches, written in this batch's transaction when it
        changed (ingest_state: a restart goes on from the last committed batch): the parcel
        stage's, the geofence tracker's when this batch had fixes for it, and the ETA
        estimator's (a large one at most every ``eta_every_us`` of receipt time, the
        batch's newest ``received_us``: a device clock far ahead must not stop it)."""
        rows = drained.rows.setdefault("ingest_state", [])
        state = orjson.dumps(self.parcels.book.transient())
        if state != self._state_written:
            rows.append((self.instance, PARCEL_STATE, state.decode()))
            self._state_written = state
        if tracked:
            snapshot = self.transitions.snapshot()
            if snapshot is not self._geo_snapshot:  # the same object while nothing changed
                self._geo_snapshot = snapshot
                rows.append((self.instance, GEOFENCE_STATE, orjson.dumps(snapshot).decode()))
        clocks = self.clocks.state()
        if clocks != self._clocks_written:
            rows.append((self.instance, CLOCK_STATE, orjson.dumps(clocks).decode()))
            self._clocks_written = clocks
        if self.hold.changes != self._hold_written:
            rows.append((self.instance, HOLD_STATE, orjson.dumps(self.hold.state()).decode()))
            self._hold_written = self.hold.changes
        changes = self.parcels.eta.changes
        if changes != self._eta_changes and self.parcels.ready and (
                self._eta_size <= self.eta_small or (received_us is not None and received_us
                                                     - self._eta_at_us >= self.eta_every_us)):
            doc = orjson.dumps(self.parcels.eta_state())
            rows.append((self.instance, ETA_STATE, doc.decode()))
            self._eta_changes, self._eta_size = changes, len(doc)
            self._eta_at_us = received_us if received_us is not None else self._eta_at_us
        if not rows:
            del drained.rows["ingest_state"]

    def _passes_of(self, drained: Drained) -> Passes:
        """Group the batch's reads into passes: the ones they close, and the ones the clock
        closed since the last batch; all are written with the batch."""
        flushed: list[Passes] = drained.evidence.get("passes", [])
        reads = drained.reads
        if not len(reads):
            return Passes.concat(flushed)
        closed = self.passes.update(Reads(reads.gate, reads.epc, reads.read["ts_us"],
                                          reads.read["antenna"], reads.read["rssi"],
                                          reads.gates, reads.epcs))  # fmt: skip
        return Passes.concat([*flushed, closed])

