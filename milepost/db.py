"""Schema migrations: numbered SQL files in ``milepost/schema``, tracked in ``schema_version``;
and :func:`listen`, the LISTEN loop both processes use."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# any constant unique to milepost: serializes migrate between ingest, api and the CLI
_LOCK_ID = 0x6D696C65706F7374 & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("milepost.schema").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, got {versions}")
    return found


def migrate(database_url: str) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; return their numbers."""
    applied: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
            for mig in migrations():
                if mig.version in done:
                    continue
                log.info("applying migration %03d_%s", mig.version, mig.name)
                with conn.transaction():
                    conn.execute(mig.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                        (mig.version, mig.name),
                    )
                applied.append(mig.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


def schema_version(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


async def listen(database_url: str, channels: str | Sequence[str], *,
                 on_notify: Callable[[str, str], None], on_up: Callable[[], None],
                 on_down: Callable[[Exception], None]) -> None:  # fmt: skip
    """LISTEN on ``channels`` for ever, on a connection of its own: ``on_up()`` each time it
    listens (the first time and after every reconnect), ``on_notify(channel, payload)`` for
    each notification, ``on_down(error)`` when the connection is lost or cannot be made;
    then it connects again with backoff (0.5 s, doubling to 30 s). Never returns."""
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(database_url,
                                                             autocommit=True) as conn:
                for name in names:
                    await conn.execute(f"LISTEN {name}")
                delay = 0.5
                on_up()
                async for n in conn.notifies():
                    on_notify(n.channel, n.payload)
        except psycopg.Error as exc:
            on_down(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
