"""Retention, run by milepost itself: TimescaleDB's Apache-licensed edition (the one
Debian ships) has no retention policies, so ``milepost ingest`` drops old chunks with
``drop_chunks`` once an hour. Two classes of data, each with its setting:

- raw: ``gps_fix``, ``tag_read``, ``sensor_reading``, ``cargo_scan``, ``eta_snapshot``,
  ``dead_letter``; ``MILEPOST_RETENTION_RAW_DAYS`` (30 days);
- events: ``gate_pass``, ``geofence_event``, ``parcel_event``;
  ``MILEPOST_RETENTION_EVENTS_DAYS`` (730 days).

A chunk goes once all of it is older than the limit (``drop_chunks`` never cuts a chunk),
so rows live up to one chunk interval longer. 0 keeps a class for ever. The plain tables
(the manifest, ``*_latest``, keys, webhooks) are not touched; webhook outbox rows
delivered or given up before the events' limit, and processed ``pod_inbox`` and
``fix_inbox`` rows older than the raw limit, are deleted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

RAW: Final = ("gps_fix", "tag_read", "sensor_reading", "cargo_scan", "eta_snapshot",
              "dead_letter")  # fmt: skip
EVENTS: Final = ("gate_pass", "geofence_event", "parcel_event")
EVERY_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Policy:
    raw_days: int = 30
    events_days: int = 730

    def limits(self) -> list[tuple[str, int]]:
        return [*((t, self.raw_days) for t in RAW), *((t, self.events_days) for t in EVENTS)]


async def apply(conn: psycopg.AsyncConnection, policy: Policy, now: datetime) -> dict[str, int]:
    """Drop what the policy says is old at ``now``; chunks dropped per table."""
    dropped: dict[str, int] = {}
    for table, days in policy.limits():
        if days <= 0:
            continue
        cur = await conn.execute("SELECT count(*) FROM drop_chunks(%s::regclass, older_than"
                                 " => %s::timestamptz)", (table, now - timedelta(days=days)))
        row = await cur.fetchone()
        dropped[table] = int(row[0]) if row else 0
    if policy.events_days > 0:
        limit = now - timedelta(days=policy.events_days)
        # delivered or given up: the delivery log keeps them as long as the events
        await conn.execute("DELETE FROM webhook_outbox WHERE delivered_at < %s OR"
                           " (next_attempt_at = 'infinity' AND created_at < %s)", (limit, limit))
    if policy.raw_days > 0:
        for inbox in ("pod_inbox", "fix_inbox"):
            await conn.execute(f"DELETE FROM {inbox} WHERE processed_at < %s",
                               (now - timedelta(days=policy.raw_days),))
    return dropped


async def run(pool: AsyncConnectionPool, policy: Policy) -> None:
    """Apply the policy now and then every hour (database time); never returns."""
    while True:
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT now()")
                row = await cur.fetchone()
                assert row is not None
                dropped = await apply(conn, policy, row[0])
            if any(dropped.values()):
                log.info("retention: dropped %s", ", ".join(
                    f"{n} chunks of {t}" for t, n in dropped.items() if n))
        except psycopg.OperationalError as exc:
            log.debug("retention skipped (%s)", exc)
        except psycopg.Error as exc:  # say so and go on: retention must not stop ingest
            log.error("retention failed: %s", exc)
        await asyncio.sleep(EVERY_S)
