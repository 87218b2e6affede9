"""Replay a recorded (or simulated) day through the :class:`~ingest.pipeline.Pipeline`,
without broker or database: the same stages, in the same order, as ``milepost ingest``.

The evidence is cut into batches of ``batch_s`` of event time, as a live ingest would
see it arrive; gate passes are closed by the end of each batch (the clock of a live
ingest's quiet gates). What the pipeline would write comes back as rows per table, so a
test or a benchmark can compare them with the truth, or two replays with each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devices.fleet import CargoScan, ProofOfDelivery, SensorReading
from devices.records import TAG_READ_DTYPE, US_PER_S
from ingest.batch import Batch, Drained
from ingest.hold import MAX_US
from ingest.manifest import Manifest
from ingest.parcels import PodEvidence, plan_from_manifest
from ingest.pipeline import Pipeline

GateReads = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], Sequence[str]]


@dataclass(slots=True)
class Replayed:
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    batches: int = 0
    fixes: int = 0
    reads: int = 0


def pipeline_for(manifest: Manifest) -> Pipeline:
    """A pipeline with the manifest's geofences, plan and antenna roles loaded."""
    p = Pipeline()
    plan, fences = plan_from_manifest(manifest)
    p.set_fences(fences)
    p.set_plan(plan)
    p.set_roles({(g.gate_id, int(a)): role for g in manifest.gates
                 for a, role in g.antennas.items()})  # fmt: skip
    return p


Arrival = Callable[[str, str, NDArray[np.int64]], NDArray[np.int64]]


def in_event_time(kind: str, vehicle: str, ts_us: NDArray[np.int64]) -> NDArray[np.int64]:
    """Everything arrives when it happens (the default :data:`Arrival`)."""
    return ts_us


def replay(
    pipeline: Pipeline,
    *,
    start_us: int,
    end_us: int,
    fixes: Mapping[str, NDArray[Any]],
    reads: Mapping[str, GateReads] | None = None,
    cargo: Sequence[tuple[str, CargoScan]] = (),
    sensors: Sequence[tuple[str, SensorReading]] = (),
    pods: Sequence[tuple[str, ProofOfDelivery]] = (),
    batch_s: float = 1.0,
    on_batch: Callable[[int, Drained], None] | None = None,
    arrival: Arrival = in_event_time,
) -> Replayed:
    """Feed everything between ``start_us`` and ``end_us`` (fixes: GPS_FIX_DTYPE arrays in
    time order per vehicle; reads: per gate, time-ordered ts, antenna, RSSI and EPC);
    ``on_batch(end_us, drained)`` sees every processed batch.

    ``arrival(kind, vehicle, ts_us)`` says when the van's fixes (``"gps"``), inventories
    (``"cargo"``), readings (``"sensor"``) and proofs (``"pod"``) stamped ``ts_us`` reach
    ingest (at or after ``ts_us``; by default at once): a batch holds what arrives in its
    ``batch_s``, in arrival order (a van offline for a while, then flushing its backlog
    out of order). Gate reads arrive when they are read (the host stamps them)."""
    out = Replayed()
    step = max(1, round(batch_s * US_PER_S))
    reads = reads or {}
    # per van, its fixes in arrival order, and when each arrives
    gps: dict[str, tuple[NDArray[Any], NDArray[np.int64]]] = {}
    for v, van_fixes in fixes.items():
        at = np.asarray(arrival("gps", v, van_fixes["ts_us"]), np.int64)
        order = np.argsort(at, kind="stable")
        gps[v] = van_fixes[order], at[order]
    # inventories, readings and proofs in arrival order
    items: list[tuple[int, int, str, str, Any]] = []
    for stream, kind in ((cargo, "cargo"), (sensors, "sensor"), (pods, "pod")):
        for vehicle, record in stream:
            at_us = int(arrival(kind, vehicle, np.array([record.ts_us], np.int64))[0])
            items.append((at_us, len(items), kind, vehicle, record))
    items.sort(key=lambda x: (x[0], x[1]))
    k = 0
    t = start_us
    flushed = None
    while t < end_us:
        t_end = t + step
        batch = Batch(10**9, 10**9, 10**9)
        if flushed is not None and len(flushed):
            batch.add_evidence("passes", flushed)
        for v, (arr, at) in gps.items():
            lo, hi = (int(x) for x in np.searchsorted(at, [t, t_end]))
            if hi > lo:
                batch.add_fixes(v, arr[lo:hi], t_end)
                out.fixes += hi - lo
        for gate, (ts, antenna, rssi, epcs) in reads.items():
            a, b = (int(x) for x in np.searchsorted(ts, [t, t_end]))
            if b > a:
                tags = np.zeros(b - a, TAG_READ_DTYPE)
                tags["ts_us"], tags["antenna"], tags["rssi"] = ts[a:b], antenna[a:b], rssi[a:b]
                tags["read_count"] = 1
                batch.add_reads(gate, list(epcs[a:b]), tags)
                out.reads += b - a
        while k < len(items) and items[k][0] < t_end:
            _, _, kind, vehicle, record = items[k]
            if kind == "cargo":  # compared with the last one in process, as ingest does
                batch.add_evidence("scans", (vehicle, record))
            elif kind == "sensor":
                row, temp = pipeline.sensor_row(vehicle, record)
                batch.add_row("sensor", row)
                if temp is not None:
                    batch.add_evidence("sensor", temp)
            else:
                batch.add_evidence("pod", PodEvidence(vehicle, record))
            k += 1
        if pipeline.hold.vans:  # the receipt clock, as ingest's runs without a message
            batch.add_evidence("clock", t_end)
        drained = batch.drain()
        pipeline.process(drained)
        flushed = pipeline.flush_passes(t_end)
        _keep(out, drained)
        if on_batch is not None:
            on_batch(t_end, drained)
        out.batches += 1
        t = t_end
    # the last passes close with the day
    last = Batch(10**9, 10**9, 10**9)
    if flushed is not None and len(flushed):
        last.add_evidence("passes", flushed)
    rest = pipeline.flush_passes(None)
    if len(rest):
        last.add_evidence("passes", rest)
    last.add_evidence("clock", end_us + MAX_US)  # whatever is held goes
    drained = last.drain()
    pipeline.process(drained)
    _keep(out, drained)
    return out


def _keep(out: Replayed, drained: Drained) -> None:
    """The batch's rows, but the parcel stage's state of each (the newest is in the
    pipeline itself)."""
    for table, rows in drained.rows.items():
        if table != "ingest_state":
            out.rows.setdefault(table, []).extend(rows)
