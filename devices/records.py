"""Typed records produced by the decoders, and their NumPy dtypes.

This is the one place where fields and units are spelled. Decoders return lists of
these frozen records; ingest turns them into columnar NumPy batches with the dtypes
below. Missing optional values are NaN for floats and -1 for integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Inside NumPy arrays, times are int64 microseconds since the Unix epoch (UTC).
US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One position fix, as a device reported it. The vehicle comes from the transport."""

    ts_us: int
    lon_deg: float
    lat_deg: float
    speed_mps: float = math.nan
    heading_deg: float = math.nan
    acc_m: float = math.nan
    alt_m: float = math.nan
    sats: int = -1
    hdop: float = math.nan
    seq: int = -1


GPS_FIX_DTYPE = np.dtype(
    [
        ("ts_us", np.int64),
        ("lon_deg", np.float64),
        ("lat_deg", np.float64),
        ("speed_mps", np.float64),
        ("heading_deg", np.float64),
        ("acc_m", np.float64),
        ("alt_m", np.float64),
        ("sats", np.int16),
        ("hdop", np.float64),
        ("seq", np.int64),
    ]
)


def fixes_to_array(fixes: list[GpsFix]) -> np.ndarray:
    """Pack decoded fixes into a structured array of :data:`GPS_FIX_DTYPE`."""
    return np.array(
        [
            (f.ts_us, f.lon_deg, f.lat_deg, f.speed_mps, f.heading_deg, f.acc_m, f.alt_m,
             f.sats, f.hdop, f.seq)
            for f in fixes
        ],
        dtype=GPS_FIX_DTYPE,
    )


@dataclass(frozen=True, slots=True)
class TagRead:
    """One RFID tag observation by a reader.

    ``epc_hex`` is the EPC in upper-case hex. ``rssi`` is in the reader's own unit
    (``rssi_dbm`` True when it is signed dBm, as Mercury reports; Chafon's unsigned
    vendor byte otherwise). ``offset_ms`` is the reader's relative timestamp when it
    gives one (Mercury TIMESTAMP metadata), else -1; the host adds its receipt time.
    """

    epc_hex: str
    antenna: int = -1
    rssi: float = math.nan
    rssi_dbm: bool = False
    read_count: int = 1
    offset_ms: int = -1
    frequency_khz: int = -1
    phase_deg: int = -1


# a tag read inside NumPy arrays; the EPC and gate travel as codes into label lists
TAG_READ_DTYPE = np.dtype(
    [("ts_us", np.int64), ("antenna", np.int16), ("rssi", np.float64), ("read_count", np.int32)]
)


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    """A non-read message that a reader sends: keep-alive, end of cycle, health alarm.

    ``code`` is the protocol's own number for the message (status word or byte, or
    opcode; see docs/protocols/rfid.md). ``count`` is a tag count the message carries
    (Mercury read-tag-multiple reply, Chafon statistics and heartbeat), else -1.
    """

    kind: str  # "keepalive" | "cycle_end" | "more" | "health" | "response" | "boot"
    code: int = 0
    detail: str = ""
    count: int = -1
