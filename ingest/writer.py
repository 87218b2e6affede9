"""The writer: one transaction per flush, one binary COPY per table.

Fixes are COPYed straight into ``gps_fix``. The unique index on (vehicle_id, time,
device_time) (nulls not distinct; migration 11) makes a redelivered fix a unique
violation; then, and only then, the transaction is rolled back and done again with the
fixes through a temporary staging table and ``INSERT ... ON CONFLICT DO NOTHING``, so a
fix is stored exactly once however often the broker delivers it.

Round trips are few, because each waits for the event loop as well as the server
(measured in a 50-fix drain: about 10 ms each for BEGIN and a SAVEPOINT): BEGIN, the
COPYs, one pipeline of everything else (the ``vehicle_latest`` upsert, then the small
tables' statements), COMMIT. No savepoint: a unique violation, rare, redoes the
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ingest import copy
from ingest.batch import DeadLetter, FixFrame, ReadFrame

# (INSERT ... ON CONFLICT DO NOTHING, rows) for the small tables
Rows = tuple[str, Sequence[Sequence[object]]]

log = logging.getLogger(__name__)

GPS_COLUMNS = (
    "time", "vehicle_id", "lon", "lat", "speed_mps", "heading_deg", "acc_m", "alt_m",
    "sats", "hdop", "seq", "received_at", "device_time",
)  # fmt: skip


def gps_copy_payload(frame: FixFrame) -> bytes:
    """The binary COPY stream of a frame's fixes, in GPS_COLUMNS order."""
    f = frame.fix
    return copy.encode(
        [
            copy.Column("timestamptz", f["ts_us"]),
            copy.Column("text", frame.vehicle, labels=frame.vehicles),
            copy.float_column(f["lon_deg"]),
            copy.float_column(f["lat_deg"]),
            copy.float_column(f["speed_mps"]),
            copy.float_column(f["heading_deg"]),
            copy.float_column(f["acc_m"]),
            copy.float_column(f["alt_m"]),
            copy.int_column("int2", f["sats"]),
            copy.float_column(f["hdop"]),
            copy.int_column("int8", f["seq"]),
            copy.Column("timestamptz", frame.received_us),
            _device_time(frame),
        ]
    )


def _device_time(frame: FixFrame) -> copy.Column:
    """gps_fix.device_time: the time the device stamped, where its clock was corrected."""
    off = frame.clock_us
    if off is None:
        return copy.Column("timestamptz", frame.fix["ts_us"], np.ones(len(frame), bool))
    return copy.Column("timestamptz", frame.fix["ts_us"] + off, off == 0)


def newest_per_vehicle(frame: FixFrame) -> np.ndarray:
    """Row indexes of the newest fix of each vehicle in the frame."""
    order = np.lexsort((frame.fix["ts_us"], frame.vehicle))
    last = np.r_[frame.vehicle[order][1:] != frame.vehicle[order][:-1], True]
    return order[last]


def latest_params(frame: FixFrame) -> tuple[list[Any], ...]:
    """The ``vehicle_latest`` upsert's arrays: each vehicle's newest fix in the frame."""
    idx = newest_per_vehicle(frame)
    f = frame.fix[idx]
    names = [frame.vehicles[c] for c in frame.vehicle[idx].tolist()]
    ts = [us_to_datetime(t) for t in f["ts_us"].tolist()]

    def opt(a: np.ndarray) -> list[float | None]:
        return [None if x != x else x for x in a.tolist()]  # NaN -> NULL

    return (names, ts, f["lon_deg"].tolist(), f["lat_deg"].tolist(), opt(f["speed_mps"]),
            opt(f["heading_deg"]), opt(f["acc_m"]))  # fmt: skip


_UPSERT_LATEST = """
INSERT INTO vehicle_latest AS v (vehicle_id, time, lon, lat, speed_mps, heading_deg, acc_m,
                                 updated_at)
SELECT *, now() FROM unnest(%s::text[], %s::timestamptz[], %s::float8[], %s::float8[],
                            %s::float8[], %s::float8[], %s::float8[])
ON CONFLICT (vehicle_id) DO UPDATE
SET time = excluded.time, lon = excluded.lon, lat = excluded.lat,
    speed_mps = excluded.speed_mps, heading_deg = excluded.heading_deg,
    acc_m = excluded.acc_m, updated_at = now()
WHERE v.time < excluded.time
"""


def tag_read_copy_payload(reads: ReadFrame) -> bytes:
    r = reads.read
    return copy.encode(
        [
            copy.Column("timestamptz", r["ts_us"]),
            copy.Column("text", reads.gate, labels=reads.gates),
            copy.Column("text", reads.epc, labels=reads.epcs),
            copy.int_column("int2", r["antenna"]),
            copy.float_column(r["rssi"]),
            copy.Column("int4", r["read_count"]),
        ]
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """One batch as :meth:`Writer.write` sends it: COPY payloads and statements."""

    fixes: bytes | None  # gps_fix COPY payload
    n_fixes: int
    reads: bytes | None  # tag_read COPY payload
    n_reads: int
    dead: list[DeadLetter]
    statements: list[Rows]  # in a pipeline, in order; vehicle_latest's upsert first


@dataclass(slots=True)
class FlushResult:
    stored: int  # rows new to gps_fix
    duplicates: int
    dead: int
    reads: int = 0


class Writer:
    """Writes drained batches; owns no connection, borrows one from the pool per flush."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @staticmethod
    def prepare(
        frame: FixFrame, dead: list[DeadLetter], reads: ReadFrame | None = None,
        extra: Sequence[Rows] = (),
    ) -> Prepared:  # fmt: skip
        """Everything of one batch that :meth:`write` sends, encoded (no I/O).

        ``extra`` are further tables' rows (gate passes, cargo scans, sensor readings) as
        (INSERT ... ON CONFLICT DO NOTHING statement, rows) pairs: a few rows per flush,
        and a redelivered message must not fail the transaction.
        """
        statements = [(s, rows) for s, rows in extra if rows]
        if len(frame):  # first: the small tables' statements may update what it inserts
            statements.insert(0, (_UPSERT_LATEST, [latest_params(frame)]))
        n_reads = len(reads) if reads is not None else 0
        return Prepared(
            gps_copy_payload(frame) if len(frame) else None, len(frame),
            tag_read_copy_payload(reads) if reads is not None and n_reads else None, n_reads,
            dead, statements,
        )  # fmt: skip

    async def flush(
        self, frame: FixFrame, dead: list[DeadLetter], reads: ReadFrame | None = None,
        extra: Sequence[Rows] = (),
    ) -> FlushResult:  # fmt: skip
        """Write everything of one batch in one transaction: :meth:`prepare`, then
        :meth:`write`."""
        return await self.write(self.prepare(frame, dead, reads, extra))

    async def write(self, p: Prepared) -> FlushResult:
        """Write a prepared batch in one transaction."""
        staged = False
        while True:
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    stored = 0
                    if p.fixes is not None:
                        stored = await self._write_fixes(conn, p.fixes, p.n_fixes, staged)
                    if p.reads is not None:
                        async with (
                            conn.cursor() as cur,
                            cur.copy(
                                "COPY tag_read (time, gate_id, epc, antenna, rssi, read_count)"
                                " FROM STDIN (FORMAT BINARY)"
                            ) as cp,
                        ):
                            await cp.write(p.reads)
                    if p.dead:
                        await self._write_dead(conn, p.dead)
                    if p.statements:
                        async with conn.pipeline(), conn.cursor() as cur:
                            for statement, rows in p.statements:
                                await cur.executemany(statement, rows)
            except psycopg.errors.UniqueViolation:
                if staged or p.fixes is None:
                    raise
                staged = True  # some fixes are stored already (a redelivery): again, staged
                continue
            return FlushResult(stored, p.n_fixes - stored, len(p.dead), p.n_reads)

    async def _write_fixes(self, conn: psycopg.AsyncConnection, payload: bytes, n: int,
                           staged: bool) -> int:  # fmt: skip
        """COPY the fixes into gps_fix, or (``staged``) through the staging table, skipping
        the ones stored already; how many are new."""
        cols = sql.SQL(", ").join(map(sql.Identifier, GPS_COLUMNS))
        async with conn.cursor() as cur:
            if not staged:
                async with cur.copy(
                    sql.SQL("COPY gps_fix ({}) FROM STDIN (FORMAT BINARY)").format(cols)
                ) as cp:
                    await cp.write(payload)
                return n
            await cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS gps_fix_stage"
                " (LIKE gps_fix INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            async with cur.copy(
                sql.SQL("COPY gps_fix_stage ({}) FROM STDIN (FORMAT BINARY)").format(cols)
            ) as cp:
                await cp.write(payload)
            await cur.execute(
                sql.SQL(
                    "INSERT INTO gps_fix ({c}) SELECT {c} FROM gps_fix_stage"
                    " ON CONFLICT (vehicle_id, time, device_time) DO NOTHING"
                ).format(c=cols)
            )
            return max(cur.rowcount, 0)

    async def _write_dead(self, conn: psycopg.AsyncConnection, dead: list[DeadLetter]) -> None:
        async with (
            conn.cursor() as cur,
            cur.copy("COPY dead_letter (time, source, payload, reason) FROM STDIN") as cp,
        ):
            for d in dead:
                await cp.write_row((us_to_datetime(d.received_us), d.source, d.payload, d.reason))


def us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_us(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
