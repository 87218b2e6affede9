"""Which vehicle an external device id belongs to (OwnTracks ``user/device``, OsmAnd id).

Read from the ``vehicle`` table and cached; refreshed every ``REFRESH_S`` seconds, and at
most every ``MISS_REFRESH_S`` seconds on a miss so that a vehicle registered a moment
ago is found without letting unknown ids hammer the database.
"""

from __future__ import annotations

import time

from psycopg_pool import AsyncConnectionPool

REFRESH_S = 30.0
MISS_REFRESH_S = 2.0


class Registry:
    def __init__(self, pool: AsyncConnectionPool, column: str) -> None:
        if column not in ("owntracks_id", "osmand_id"):
            raise ValueError(f"unknown registry column {column!r}")
        self._pool = pool
        self._column = column
        self._map: dict[str, str] = {}
        self._loaded = -1e9

    async def _refresh(self) -> None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {self._column}, vehicle_id FROM vehicle"
                f" WHERE {self._column} IS NOT NULL"
            )
            self._map = {row[0]: row[1] for row in await cur.fetchall()}
        self._loaded = time.monotonic()

    async def vehicle_for(self, device: str) -> str | None:
        age = time.monotonic() - self._loaded
        if age > REFRESH_S:
            await self._refresh()
        found = self._map.get(device)
        if found is None and age > MISS_REFRESH_S:
            await self._refresh()
            found = self._map.get(device)
        return found
