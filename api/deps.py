"""Request-scoped dependencies: the pool from the lifespan state, and the caller's key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError
from api.keys import ApiKey, verify_key
from api.ratelimit import RateLimiter, retry_after


def pool(request: Request) -> AsyncConnectionPool:
    p: AsyncConnectionPool = request.state.pool
    return p


def require(*roles: str) -> Callable[[Request], Coroutine[Any, Any, ApiKey]]:
    """A dependency that admits a bearer key of one of ``roles`` (``admin`` always)."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "missing bearer API key",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip
        async with pool(request).connection() as conn:
            key = await verify_key(conn, token.strip())
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if key.role not in allowed:
            raise ApiError(403, "forbidden", f"this endpoint needs a {' or '.join(roles)} key")
        limiter: RateLimiter = request.state.limiter
        wait = limiter.take(key.key_id)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many requests for this key; retry in"
                           f" {wait:.1f} s", {"Retry-After": retry_after(wait)})  # fmt: skip
        request.state.key = key
        return key

    return dependency
