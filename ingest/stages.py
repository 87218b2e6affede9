"""The processing order, as one tuple of frame -> frame functions (STAGES).

A stage only filters rows or adds columns. Rows a stage rejects are returned with a
reason so the caller can store them in ``dead_letter``; nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from numpy.typing import NDArray

from ingest.batch import DeadLetter, FixFrame

# a fix may be stamped at most this far ahead of its receipt (device clocks drift)
MAX_AHEAD_US = 25 * 3600 * 1_000_000
EARLIEST_US = 946_684_800_000_000  # 2000-01-01


@dataclass(slots=True)
class StageResult:
    frame: FixFrame
    rejected: list[DeadLetter]


Stage = Callable[[FixFrame], StageResult]


def _reject_rows(frame: FixFrame, index: NDArray[np.intp], reasons: list[str]) -> list[DeadLetter]:
    out = []
    for i, reason in zip(index.tolist(), reasons, strict=True):
        row = frame.fix[i]
        vehicle = frame.vehicles[int(frame.vehicle[i])]
        payload = {name: row[name].item() for name in frame.fix.dtype.names or ()}
        out.append(
            DeadLetter(
                int(frame.received_us[i]),
                f"vehicle:{vehicle}",
                orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                f"invalid fix: {reason}",
            )
        )
    return out


def validate(frame: FixFrame) -> StageResult:
    """Reject impossible fixes: NaN or out-of-range coordinates, (0, 0), times before 2000
    or more than 25 h after receipt, negative speed, heading outside [0, 360]."""
    f = frame.fix
    lon, lat, ts = f["lon_deg"], f["lat_deg"], f["ts_us"]
    checks: list[tuple[NDArray[np.bool_], str]] = [
        (~np.isfinite(lon) | ~np.isfinite(lat), "coordinates are not finite numbers"),
        ((lat < -90) | (lat > 90), "latitude out of range [-90, 90]"),
        ((lon < -180) | (lon > 180), "longitude out of range [-180, 180]"),
        ((lat == 0) & (lon == 0), "position is (0, 0), a receiver with no fix"),
        (ts < EARLIEST_US, "timestamp before 2000-01-01"),
        (ts > frame.received_us + MAX_AHEAD_US, "timestamp more than 25 h ahead of receipt"),
        (f["speed_mps"] < 0, "negative speed"),
        (np.isinf(f["speed_mps"]), "speed is infinite"),
        ((f["heading_deg"] < 0) | (f["heading_deg"] > 360), "heading out of range [0, 360]"),
    ]
    bad = np.zeros(len(frame), dtype=bool)
    reason_of = np.full(len(frame), -1, dtype=np.int64)
    for k, (mask, _) in enumerate(checks):
        first = mask & ~bad
        reason_of[first] = k
        bad |= mask
    if not bad.any():
        return StageResult(frame, [])
    index = np.flatnonzero(bad)
    reasons = [checks[int(k)][1] for k in reason_of[index]]
    return StageResult(frame.take(~bad), _reject_rows(frame, index, reasons))


def dedupe(frame: FixFrame) -> StageResult:
    """Keep the first fix per (vehicle, time) in the batch; later copies are redeliveries."""
    if len(frame) < 2:
        return StageResult(frame, [])
    keys = np.empty(len(frame), dtype=[("v", np.int32), ("t", np.int64)])
    keys["v"], keys["t"] = frame.vehicle, frame.fix["ts_us"]
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(frame):
        return StageResult(frame, [])
    return StageResult(frame.take(np.sort(first)), [])


STAGES: tuple[Stage, ...] = (validate, dedupe)


def run_stages(frame: FixFrame) -> StageResult:
    rejected: list[DeadLetter] = []
    for stage in STAGES:
        result = stage(frame)
        frame = result.frame
        rejected.extend(result.rejected)
    return StageResult(frame, rejected)
