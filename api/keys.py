"""API keys: ``mp_<prefix>_<secret>``; only the prefix and a SHA-256 of the secret are stored.

The secret has 256 bits of entropy, so a plain (unsalted) SHA-256 is a sound hash for it:
there is nothing to brute-force, and lookups stay one indexed query.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

ROLES = ("dispatcher", "customer", "device", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: int
    prefix: str
    role: str
    name: str | None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != "mp" or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1], parts[2]


def create_key(conn: psycopg.Connection, role: str, name: str | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    conn.execute(
        "INSERT INTO api_key (prefix, key_hash, role, name) VALUES (%s, %s, %s, %s)",
        (prefix, _hash(secret), role, name),
    )
    return f"mp_{prefix}_{secret}"


def revoke_key(conn: psycopg.Connection, prefix: str) -> bool:
    cur = conn.execute(
        "UPDATE api_key SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL",
        (prefix,),
    )
    return cur.rowcount == 1


# the one statement that verifies a key: by its prefix, if not revoked
VERIFY_SQL = ("SELECT key_id, key_hash, role, name FROM api_key"
              " WHERE prefix = %s AND revoked_at IS NULL")  # fmt: skip


def key_of(row: tuple[Any, ...] | None, prefix: str, secret: str) -> ApiKey | None:
    """The key of ``VERIFY_SQL``'s row when the secret matches, else None."""
    if row is None or not hmac.compare_digest(bytes(row[1]), _hash(secret)):
        return None
    return ApiKey(row[0], prefix, row[2], row[3])


async def verify_key(conn: psycopg.AsyncConnection, key: str) -> ApiKey | None:
    """The key's record when it exists and is not revoked, else None."""
    split = split_key(key)
    if split is None:
        return None
    prefix, secret = split
    cur = await conn.execute(VERIFY_SQL, (prefix,))
    return key_of(await cur.fetchone(), prefix, secret)
