"""Micro benchmark cases: each returns medians of a baseline and of milepost, and their ratio.

The end-to-end ingest suite of issue 3 is in benchmarks.pipeline."""

from __future__ import annotations

import asyncio
import math
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import AsyncConnectionPool

from benchmarks.gates import gate_decode_vs_split
from devices.records import GPS_FIX_DTYPE
from ingest.batch import FixFrame
from ingest.stages import EARLIEST_US, MAX_AHEAD_US, validate
from ingest.writer import GPS_COLUMNS, Writer, gps_copy_payload
from milepost.db import migrate

STATE_DIR = Path(__file__).resolve().parents[1] / "var"
ADMIN_URL = "postgresql://milepost@127.0.0.1:55432/postgres"


@dataclass
class BenchDb:
    url: str
    name: str

    @classmethod
    def create(cls) -> BenchDb:
        name = f"milepost_bench_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql://milepost@127.0.0.1:55432/{name}"
        migrate(url)
        return cls(url, name)

    def drop(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def truncate(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE gps_fix, vehicle_latest, dead_letter")
            conn.execute("VACUUM ANALYZE gps_fix")


def synthetic_frame(rows: int, vehicles: int = 1000, seed: int = 1) -> FixFrame:
    rng = np.random.default_rng(seed)
    fix = np.zeros(rows, GPS_FIX_DTYPE)
    t0 = 1_790_000_000_000_000
    per = rows // vehicles + 1
    fix["ts_us"] = t0 + (np.arange(rows) // vehicles) * 1_000_000
    fix["lon_deg"] = 13.4 + rng.normal(0, 0.05, rows)
    fix["lat_deg"] = 52.5 + rng.normal(0, 0.05, rows)
    fix["speed_mps"] = rng.uniform(0, 15, rows)
    fix["heading_deg"] = rng.uniform(0, 360, rows)
    fix["acc_m"] = 5.0
    fix["alt_m"] = np.nan
    fix["sats"] = 9
    fix["hdop"] = np.nan
    fix["seq"] = np.arange(rows) // vehicles
    del per
    vehicle = (np.arange(rows) % vehicles).astype(np.int32)
    received = fix["ts_us"] + 500_000
    return FixFrame(fix, vehicle, received, [f"VAN-{i:05d}" for i in range(vehicles)])


def _result(baseline: str, subject: str, base: list[float], subj: list[float], unit: str,
            meaning: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    b, s = statistics.median(base), statistics.median(subj)
    return {"baseline": baseline, "subject": subject, "unit": unit, "baseline_runs": base,
            "subject_runs": subj, "baseline_median": b, "subject_median": s, "ratio": s / b,
            "meaning": meaning, **extra}  # fmt: skip


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- writer vs raw COPY


def writer_vs_raw_copy(db: BenchDb, rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    """milepost's whole flush (encode, COPY, vehicle_latest upsert, commit) against a raw
    binary COPY of the same, already encoded rows into the same table."""
    frame = synthetic_frame(rows)
    payload = gps_copy_payload(frame)
    cols = ", ".join(GPS_COLUMNS)

    def raw() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(payload)

    async def flush() -> None:
        async with AsyncConnectionPool(db.url, min_size=1, max_size=1) as pool:
            await Writer(pool).flush(frame, [])

    base, subj = [], []
    for _round in range(rounds):
        db.truncate()
        base.append(_timed(raw))
        db.truncate()
        subj.append(_timed(lambda: asyncio.run(flush())))
    return _result("raw binary COPY of pre-encoded rows", "Writer.flush", base, subj, "s",
                   "milepost time / raw COPY time; 1.0 = no overhead", rows=rows)  # fmt: skip


def encoder_vs_psycopg_rows(db: BenchDb, rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    """Encode + COPY with the NumPy encoder against psycopg's binary COPY ``write_row`` loop."""
    frame = synthetic_frame(rows)
    cols = ", ".join(GPS_COLUMNS)
    f = frame.fix

    def opt(x: float) -> float | None:
        return None if math.isnan(x) else x

    from ingest.writer import us_to_datetime

    tuples = [
        (us_to_datetime(int(f["ts_us"][i])), frame.vehicles[int(frame.vehicle[i])],
         float(f["lon_deg"][i]), float(f["lat_deg"][i]), opt(float(f["speed_mps"][i])),
         opt(float(f["heading_deg"][i])), opt(float(f["acc_m"][i])), None, int(f["sats"][i]),
         None, int(f["seq"][i]), us_to_datetime(int(frame.received_us[i])), None)
        for i in range(rows)
    ]  # fmt: skip

    def rowwise() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["timestamptz", "text", "float8", "float8", "float8", "float8",
                          "float8", "float8", "int2", "float8", "int8", "timestamptz",
                          "timestamptz"])
            for t in tuples:
                cp.write_row(t)

    def numpy_encoded() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(gps_copy_payload(frame))

    base, subj = [], []
    for _round in range(rounds):
        db.truncate()
        base.append(_timed(rowwise))
        db.truncate()
        subj.append(_timed(numpy_encoded))
    return _result("psycopg binary COPY, write_row per row", "NumPy encoder + COPY", base,
                   subj, "s", "milepost time / row-wise time; below 1.0 is faster",
                   rows=rows)  # fmt: skip


# ---------------------------------------------------------------- validate vs Python loop


def validate_vs_python(rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    frame = synthetic_frame(rows)  # all valid: both sides do the same checks, no rejects
    recs = frame.fix.tolist()
    names = frame.fix.dtype.names or ()
    li, ti, si, hi = (names.index(n) for n in ("lat_deg", "ts_us", "speed_mps", "heading_deg"))
    oi = names.index("lon_deg")
    received = frame.received_us.tolist()

    def loop() -> int:
        kept = 0
        for r, rec in zip(recs, received, strict=True):
            lat, lon, ts, sp, hd = r[li], r[oi], r[ti], r[si], r[hi]
            if not (math.isfinite(lat) and math.isfinite(lon)):
                continue
            if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
                continue
            if ts < EARLIEST_US or ts > rec + MAX_AHEAD_US or sp < 0 or math.isinf(sp):
                continue
            if hd < 0 or hd > 360:
                continue
            kept += 1
        return kept

    assert loop() == len(validate(frame).frame)
    base = [_timed(loop) for _ in range(rounds)]
    subj = [_timed(lambda: validate(frame)) for _ in range(rounds)]
    return _result("plain-Python loop", "stages.validate (NumPy)", base, subj, "s",
                   "milepost time / loop time; below 1.0 is faster", rows=rows)  # fmt: skip


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "gate_decode_vs_split": gate_decode_vs_split,
    "writer_vs_raw_copy": writer_vs_raw_copy,
    "encoder_vs_psycopg_rows": encoder_vs_psycopg_rows,
    "validate_vs_python": validate_vs_python,
}
