"""A per-van hold for data that comes late, so that the stages take a backlog in time order.

The stages take a van's fixes in time order from the newest they processed on (the track
buffer, the geofence tracker, the ETA estimator), and sort what one batch brings. A
backlog that arrives out of order over several batches (more than a batch holds, or
straddling its wait) would have the older part of every later batch ignored. So when a
batch brings fixes of a van that are late (receipt lag, its clock set right, more than
:data:`LATE_US` past the fleet's; ingest/clocks.py), everything of that van from then on
(fixes, inventories, temperatures, proofs) is held, until none of its fixes came late
for :data:`QUIET_US` of receipt time (the flush is over) or it was held for
:data:`MAX_US`; then it all goes to the stages in one batch. Its times are corrected
when it goes, with the offset known then: :data:`MAX_US` outlasts the confirmation of a
van whose clock is behind (which looks late until it is confirmed), so its first minute
goes in corrected too.

What is held is stored already (gps_fix, sensor_reading: the batch that brought it wrote
it and was acknowledged), and is kept in ``ingest_state`` (row ``held``) with every batch
that changed it, so a restart releases it as this process would have. Pure: arrays and
records in, arrays and records out; receipt times only, never the wall clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from devices.fleet import CargoScan, ProofOfDelivery
from devices.records import GPS_FIX_DTYPE
from geo.eta import pack_arrays, unpack_arrays
from ingest.batch import FixFrame, concat_fixes
from ingest.parcels import PodEvidence, SensorEvidence

US = 1_000_000
LATE_US = 120 * US  # a fix this much later than the fleet's is late data (and a clock this
# far behind is confirmed or dropped by ingest/clocks.py, BEHIND_US: none is held for ever)
QUIET_US = 2 * US  # a van's hold goes once no late fix of it came for this long
MAX_US = 90 * US  # ... or once it held this long (a clock behind is confirmed in 60 s)
T = TypeVar("T")


@dataclass(slots=True)
class _Held:
    first_us: int  # receipt time: when the hold began
    last_late_us: int  # ... and its newest late fix came
    fixes: list[NDArray[Any]] = field(default_factory=list)  # GPS_FIX_DTYPE, device times
    received: list[NDArray[np.int64]] = field(default_factory=list)
    scans: list[tuple[str, CargoScan]] = field(default_factory=list)
    sensor: list[SensorEvidence] = field(default_factory=list)
    pods: list[PodEvidence] = field(default_factory=list)


@dataclass(slots=True)
class Admitted:
    """What the stages take now: the batch's own and what the hold let go (device times)."""

    frame: FixFrame
    scans: list[tuple[str, CargoScan]]
    sensor: list[SensorEvidence]
    pods: list[PodEvidence]
    released: list[str]  # the vans whose hold went with this batch


class BacklogHold:
    """See the module docstring. Not thread-safe: one pipeline owns it."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self.changes = 0  # counts what changed the state (held, let go, a late fix's time)

    @property
    def vans(self) -> list[str]:
        return list(self._held)

    def fixes_held(self) -> int:
        return sum(len(a) for h in self._held.values() for a in h.fixes)

    def since(self) -> dict[str, int]:
        """Per held van, the receipt time of its first held fix: the stages have seen its
        fixes received before, none after."""
        return {van: min((int(r.min()) for r in h.received if len(r)), default=h.first_us)
                for van, h in self._held.items()}  # fmt: skip

    def due(self, now_us: int) -> bool:
        """Whether a batch at ``now_us`` would let some van's hold go."""
        return any(self._ready(h, now_us) for h in self._held.values())

    @staticmethod
    def _ready(h: _Held, now_us: int) -> bool:
        return now_us - h.last_late_us >= QUIET_US or now_us - h.first_us >= MAX_US

    def admit(self, frame: FixFrame, late: NDArray[np.bool_],
              scans: Sequence[tuple[str, CargoScan]], sensor: Sequence[SensorEvidence],
              pods: Sequence[PodEvidence], now_us: int) -> Admitted:  # fmt: skip
        """Take one batch (``late``: per fix of ``frame``, whether it came late); return what
        goes to the stages now."""
        held = self._held
        if late.any():
            for code in np.unique(frame.vehicle[late]).tolist():
                van = frame.vehicles[code]
                h = held.setdefault(van, _Held(now_us, now_us))
                h.last_late_us = now_us
            self.changes += 1
        if not held:
            return Admitted(frame, list(scans), list(sensor), list(pods), [])
        keep = np.ones(len(frame), np.bool_)
        if len(frame):
            is_held = np.fromiter((v in held for v in frame.vehicles), np.bool_,
                                  len(frame.vehicles))[frame.vehicle]  # fmt: skip
            if is_held.any():
                self.changes += 1
                keep = ~is_held
                idx = np.flatnonzero(is_held)
                idx = idx[np.argsort(frame.vehicle[idx], kind="stable")]
                codes_of, starts = np.unique(frame.vehicle[idx], return_index=True)
                for code, part in zip(codes_of.tolist(), np.split(idx, starts[1:]), strict=True):
                    h = held[frame.vehicles[code]]
                    h.fixes.append(frame.fix[part])
                    h.received.append(frame.received_us[part])
        n_evidence = len(scans) + len(sensor) + len(pods)
        out_scans = _split(scans, [v for v, _ in scans], held, lambda h: h.scans)
        out_sensor = _split(sensor, [r.vehicle_id for r in sensor], held, lambda h: h.sensor)
        out_pods = _split(pods, [p.vehicle_id for p in pods], held, lambda h: h.pods)
        if len(out_scans) + len(out_sensor) + len(out_pods) < n_evidence:
            self.changes += 1
        released = [van for van, h in held.items() if self._ready(h, now_us)]
        parts, codes, received = [frame.fix[keep]], [frame.vehicle[keep]], [frame.received_us[keep]]
        vehicles = list(frame.vehicles)
        code_of = {van: code for code, van in enumerate(vehicles)}
        for van in released:
            self.changes += 1
            h = held.pop(van)
            if h.fixes:
                if (code := code_of.get(van)) is None:
                    code = code_of[van] = len(vehicles)
                    vehicles.append(van)
                fixes = concat_fixes(h.fixes)
                parts.append(fixes)
                codes.append(np.full(len(fixes), code, np.int32))
                received.append(np.concatenate(h.received))
            out_scans.extend(h.scans)
            out_sensor.extend(h.sensor)
            out_pods.extend(h.pods)
        out = FixFrame(concat_fixes(parts), np.concatenate(codes), np.concatenate(received),
                       vehicles)  # fmt: skip
        return Admitted(out, out_scans, out_sensor, out_pods, released)

    def state(self) -> dict[str, Any]:
        """What a restart needs (ingest_state row ``held``)."""
        vans = {}
        for van, h in self._held.items():
            fix = concat_fixes(h.fixes) if h.fixes else np.empty(0, GPS_FIX_DTYPE)
            received = np.concatenate(h.received) if h.received else np.empty(0, np.int64)
            vans[van] = {"first_us": h.first_us, "last_late_us": h.last_late_us,
                         "fixes": pack_arrays({"fix": np.ascontiguousarray(fix).view(np.uint8),
                                             "received": received}),
                         "scans": [[s.ts_us, list(s.epcs)] for _, s in h.scans],
                         "sensor": [[r.ts_us, r.temp_c] for r in h.sensor],
                         "pods": [dataclasses.asdict(p.pod) for p in h.pods]}  # fmt: skip
        return {"version": 1, "vans": vans}

    def restore(self, state: Mapping[str, Any]) -> int:
        """The hold of :meth:`state`; a document this version cannot read raises
        ValueError and changes nothing. Returns the vans whose hold was restored."""
        try:
            if state.get("version") != 1:
                raise ValueError(f"version {state.get('version')!r}, not 1")
            held = {str(van): _restored(str(van), doc) for van, doc in state["vans"].items()}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"held state: {exc!r}") from exc
        self._held = held
        return len(held)


def _split(items: Sequence[T], vans: Sequence[str], held: Mapping[str, _Held],
           into: Callable[[_Held], list[T]]) -> list[T]:  # fmt: skip
    """The items of vans not held; the others go into their van's hold."""
    out = []
    for item, van in zip(items, vans, strict=True):
        if (h := held.get(van)) is None:
            out.append(item)
        else:
            into(h).append(item)
    return out


def _restored(van: str, doc: Mapping[str, Any]) -> _Held:
    arrays = unpack_arrays(doc["fixes"])
    raw, received = arrays["fix"], arrays["received"]  # the fixes as bytes
    if (raw.dtype != np.uint8 or raw.ndim != 1 or received.dtype != np.int64
            or len(raw) != len(received) * GPS_FIX_DTYPE.itemsize):  # fmt: skip
        raise ValueError(f"{van}: fixes not GPS_FIX_DTYPE with one receipt time each")
    fix = raw.view(GPS_FIX_DTYPE)
    first, last = doc["first_us"], doc["last_late_us"]
    if not (type(first) is int and type(last) is int and first <= last):
        raise ValueError(f"{van}: first_us and last_late_us must be ordered integers")
    scans = [(van, CargoScan(_int(ts), tuple(str(e) for e in epcs))) for ts, epcs in doc["scans"]]
    sensor = [SensorEvidence(van, _int(ts), float(t)) for ts, t in doc["sensor"]]
    pods = [PodEvidence(van, ProofOfDelivery(**p)) for p in doc["pods"]]
    for p in pods:
        _int(p.pod.ts_us)
    return _Held(first, last, [fix] if len(fix) else [], [received] if len(fix) else [],
                 scans, sensor, pods)  # fmt: skip


def _int(x: Any) -> int:
    if type(x) is not int:
        raise ValueError(f"{x!r}: not an integer time")
    return x
