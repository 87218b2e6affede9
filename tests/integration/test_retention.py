"""Retention with drop_chunks, on a database of its own: old chunks go, recent rows stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from ingest.retention import Policy, apply
from milepost import stack
from tests.integration.conftest import scratch_database


def test_old_chunks_are_dropped_per_class_and_recent_rows_stay(
        local_stack: stack.StackInfo) -> None:  # fmt: skip
    now = datetime.now(UTC)
    with scratch_database("milepost_retention") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for days in (40, 1):
                conn.execute("INSERT INTO gps_fix (time, vehicle_id, lon, lat, received_at)"
                             " VALUES (%s, 'VAN-R', 13.4, 52.5, now())",
                             (now - timedelta(days=days),))  # fmt: skip
            for days in (800, 40):
                conn.execute("INSERT INTO parcel_event (time, event_id, tracking_number, status)"
                             " VALUES (%s, %s, 'MP-RETAIN', 'InTransit')",
                             (now - timedelta(days=days), uuid.uuid4()))  # fmt: skip

        async def run(policy: Policy) -> dict[str, int]:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                return await apply(conn, policy, now)

        kept = asyncio.run(run(Policy(raw_days=0, events_days=0)))  # 0: keep for ever
        assert kept == {}
        dropped = asyncio.run(run(Policy(raw_days=30, events_days=730)))
        assert dropped["gps_fix"] == 1 and dropped["parcel_event"] == 1
        assert dropped["tag_read"] == 0
        with psycopg.connect(url) as conn:
            fixes = conn.execute("SELECT time FROM gps_fix").fetchall()
            events = conn.execute("SELECT time FROM parcel_event").fetchall()
        assert [f[0] > now - timedelta(days=2) for f in fixes] == [True]
        assert [e[0] > now - timedelta(days=41) for e in events] == [True]
