"""Request-scoped dependencies: the pool from the lifespan state, and the caller's key."""

from __future__ import annotations

import contextlib
import select
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from fastapi import Request
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError
from api.keys import ApiKey, key_of, split_key, verify_key
from api.ratelimit import RateLimiter, retry_after


def pool(request: Request) -> AsyncConnectionPool:
    p: AsyncConnectionPool = request.state.pool
    return p


async def db_pool(request: Request) -> AsyncConnectionPool:
    """``pool`` as an async dependency: FastAPI runs a plain function dependency in a
    worker thread, a hop per request that costs more than the lookup."""
    return pool(request)


async def check_connection(conn: AsyncConnection[Any]) -> None:
    """The pool's check of a connection it hands out, without a round trip per request.

    An idle connection's socket has nothing to read unless the server said something
    unasked, and what it says to an idle session is, in practice, that it is closing it
    (a restart, a terminated backend: an error message, then end of file). Only then is
    the connection checked with a round trip (psycopg_pool's own check), so a connection
    a database restart broke is replaced instead of failing its request; the others cost
    one ``select`` with no wait.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


async def configure_connection(conn: AsyncConnection[Any]) -> None:
    """A parcel lookup connection's set-up: ``json`` and ``jsonb`` columns read by orjson
    (the timeline's event details, written by ingest; the standard library's decoder is a
    few times slower). Not for the main pool: orjson refuses what it cannot represent
    exactly (``1e400``), which user-supplied jsonb such as a stop's GeoJSON may hold."""
    set_json_loads(orjson.loads, conn)


@asynccontextmanager
async def read_connection(p: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A pool connection for one read-only statement, in autocommit mode: without the
    BEGIN and COMMIT round trips a pooled connection's implicit transaction adds. One
    statement sees one snapshot either way. (psycopg_pool's own ``check_connection``
    flips autocommit the same way; it costs no round trip on an idle connection.)"""
    async with p.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            # a lost connection says so here too: keep the error that lost it
            with contextlib.suppress(psycopg.OperationalError):
                await conn.set_autocommit(False)


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing bearer API key",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    return token.strip()


def _unknown_key() -> ApiError:
    return ApiError(401, "unauthorized", "unknown or revoked API key",
                    {"WWW-Authenticate": "Bearer"})  # fmt: skip


def _admit(request: Request, key: ApiKey | None, roles: tuple[str, ...]) -> ApiKey:
    """``key`` if it is one of ``roles`` (or admin) and within its rate; else 401, 403, 429."""
    if key is None:
        raise _unknown_key()
    if key.role not in roles and key.role != "admin":
        raise ApiError(403, "forbidden", f"this endpoint needs a {' or '.join(roles)} key")
    limiter: RateLimiter = request.state.limiter
    wait = limiter.take(key.key_id)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"too many requests for this key; retry in"
                       f" {wait:.1f} s", {"Retry-After": retry_after(wait)})  # fmt: skip
    request.state.key = key
    return key


def require(*roles: str) -> Callable[[Request], Coroutine[Any, Any, ApiKey]]:
    """A dependency that admits a bearer key of one of ``roles`` (``admin`` always)."""

    async def dependency(request: Request) -> ApiKey:
        token = _token(request)
        async with read_connection(pool(request)) as conn:
            key = await verify_key(conn, token)
        return _admit(request, key, roles)

    return dependency


# a handler's statement that verifies its Bearer key: KEY_COLUMNS first, then its own,
# FROM (SELECT 1) AS one {key_join("%s")} (with Bearer.prefix as its parameter) LEFT JOIN
KEY_COLUMNS = ("k.key_id", "k.key_hash", "k.role", "k.name")  # what Bearer.admit takes


def key_join(prefix: str) -> str:
    """The join of ``KEY_COLUMNS``' key on the SQL expression ``prefix`` (a parameter, or a
    column of the caller's statement)."""
    return f"LEFT JOIN api_key k ON k.prefix = {prefix} AND k.revoked_at IS NULL"


@dataclass(frozen=True, slots=True)
class Bearer:
    """A bearer key not verified yet, for a handler that verifies it in its own statement
    (one round trip instead of two, and still every request against the database: a
    revoked key is refused at once): the statement selects ``KEY_COLUMNS`` first, through
    ``key_join``, and the handler calls ``admit`` with those columns of its first row
    before it uses anything else. The answers are ``require``'s, in the same order: 401,
    403, 429, then the handler's own."""

    request: Request
    roles: tuple[str, ...]
    prefix: str
    secret: str

    def admit(self, key_columns: tuple[Any, ...]) -> ApiKey:
        row = key_columns if key_columns[0] is not None else None
        return _admit(self.request, key_of(row, self.prefix, self.secret), self.roles)


def bearer(*roles: str) -> Callable[[Request], Coroutine[Any, Any, Bearer]]:
    """A dependency that reads the bearer key for a handler to verify (see ``Bearer``)."""

    async def dependency(request: Request) -> Bearer:
        split = split_key(_token(request))
        if split is None:  # malformed: no key has it, no statement needed to say so
            raise _unknown_key()
        return Bearer(request, roles, *split)

    return dependency
