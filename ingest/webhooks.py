"""Signed webhooks: the outbox rows a batch's parcel events make, and the sender.

Every parcel event goes to ``webhook_outbox`` in the transaction that records it, one
row per matching subscription (:func:`outbox_rows`; a subscription matches by event type
and, when it names them, tracking numbers). :class:`WebhookSender` (a task of
``milepost ingest``) posts each row until its receiver answers 2xx:

- body: ``{"event_id", "type", "occurred_at", "data"}``, JSON, exactly as stored;
- headers ``X-Milepost-Timestamp: <unix seconds>`` and ``X-Milepost-Signature:
  sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``, ``X-Milepost-Event-Id``;
- retries with exponential backoff (``RETRY_BASE_S`` doubling, at most ``RETRY_MAX_S``,
  with jitter) for ``GIVE_UP_S`` (24 hours) after the event, then gives up and says so in
  the row's ``last_error``; every attempt's status or error is kept in the row (the
  delivery log that ``GET /v1/webhooks/{id}/deliveries`` shows);
- at least once: a row is marked delivered only after a 2xx, so a crash of either side
  repeats a delivery; receivers deduplicate by ``event_id``.

Event types: ``parcel.status`` (every parcel event), ``exception`` (parcel events with
status ``Exception``), ``parcel.eta`` (an ETA window that moved by a minute or more).
Bodies carry no van ids or positions, and of an event's ``detail`` only
:data:`PUBLIC_DETAIL`: a customer's receiver sees what a customer key sees. Each type
has its own event id (UUIDv5 of the parcel event's id and the type).

URLs on loopback, private, link-local or reserved addresses are refused when a
subscription is made and again before every delivery (a name may resolve elsewhere
later), unless ``MILEPOST_WEBHOOK_ALLOW_PRIVATE`` is true.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

EVENT_TYPES: Final = ("parcel.status", "parcel.eta", "exception")
RETRY_BASE_S: Final = 2.0
RETRY_MAX_S: Final = 3600.0
GIVE_UP_S: Final = 24 * 3600.0
TIMEOUT_S: Final = 10.0
CONCURRENCY: Final = 8  # deliveries in flight: a slow receiver holds one slot, not all
LEASE_S: Final = 60.0  # a claimed row is not claimed again for this long (crash: retried)

OUTBOX_SQL: Final = (
    "INSERT INTO webhook_outbox (webhook_id, event_id, type, body)"
    " SELECT w.webhook_id, e.event_id, e.type, e.body"
    " FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::jsonb[])"
    " AS e (event_id, type, tracking_number, body)"
    " JOIN webhook w ON w.deleted_at IS NULL AND e.type = ANY (w.events)"
    " AND (w.tracking_numbers IS NULL OR e.tracking_number = ANY (w.tracking_numbers))"
    " ON CONFLICT (webhook_id, event_id) DO NOTHING"
)


# what of a parcel event's detail a customer may see (webhooks, customer keys): not the
# planned van, binding candidates or confidences, which are the fleet's business
PUBLIC_DETAIL: Final = frozenset({"evidence", "reason", "signed_by", "photo_url",
                                  "late_by_s", "temp_c"})


def public_detail(detail: Any) -> dict[str, Any] | None:
    if not isinstance(detail, dict):
        return None
    return {k: v for k, v in detail.items() if k in PUBLIC_DETAIL}


def _iso(t: Any) -> str:
    return str(t.isoformat()).replace("+00:00", "Z")


def type_event_id(event_id: uuid.UUID, type_: str) -> uuid.UUID:
    return uuid.uuid5(event_id, type_)


def outbox_rows(events: Sequence[tuple[Any, ...]], etas: Sequence[tuple[Any, ...]]
                ) -> list[tuple[list[uuid.UUID], list[str], list[str], list[Jsonb]]]:  # fmt: skip
    """One row of parameter arrays for :data:`OUTBOX_SQL` (none when there is nothing).

    ``events``: parcel_event rows (time, event_id, tracking_number, status, sub_status,
    vehicle_id, stop_id, lon, lat, detail); ``etas``: (time, tracking_number, eta,
    earliest, latest, confidence) with datetimes.
    """
    ids: list[uuid.UUID] = []
    types: list[str] = []
    numbers: list[str] = []
    bodies: list[Jsonb] = []

    def add(base: uuid.UUID, type_: str, tn: str, occurred: Any, data: dict[str, Any]) -> None:
        eid = type_event_id(base, type_)
        ids.append(eid)
        types.append(type_)
        numbers.append(tn)
        bodies.append(Jsonb({"event_id": str(eid), "type": type_, "occurred_at": _iso(occurred),
                             "data": data}))

    for t, eid, tn, status, sub, _van, stop, _lon, _lat, detail in events:
        d = detail.obj if isinstance(detail, Jsonb) else detail
        data = {"tracking_number": tn, "status": status, "sub_status": sub, "stop_id": stop,
                "detail": public_detail(d)}  # fmt: skip
        add(eid, "parcel.status", tn, t, data)
        if status == "Exception":
            add(eid, "exception", tn, t, data)
    for t, tn, eta, lo, hi, conf in etas:
        base = uuid.uuid5(uuid.NAMESPACE_URL, f"milepost:eta:{tn}:{_iso(t)}:{_iso(eta)}")
        add(base, "parcel.eta", tn, t, {"tracking_number": tn, "eta": _iso(eta),
                                        "eta_earliest": _iso(lo), "eta_latest": _iso(hi),
                                        "confidence": round(float(conf), 3)})  # fmt: skip
    return [(ids, types, numbers, bodies)] if ids else []


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _private(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    # anything not globally routable: private, loopback, link-local, CGNAT (100.64/10),
    # reserved, 6to4 of those...
    return not a.is_global or a.is_multicast


def url_problem(url: str, *, allow_private: bool, resolve: bool = True) -> str | None:
    """Why ``url`` cannot be a webhook target, or None. Resolves the host name."""
    try:
        parts = urlsplit(url)
        host_name, port = parts.hostname, parts.port
        if host_name:
            host_name.encode("idna")
    except (ValueError, UnicodeError) as exc:
        return f"not a usable URL: {exc}"
    if parts.scheme not in ("https", "http") or not host_name:
        return "the URL must be http:// or https:// with a host"
    if allow_private:
        return None
    host = host_name
    try:
        addresses = [host] if _is_ip(host) else (
            [str(a[4][0]) for a in socket.getaddrinfo(host, port or 443,
                                                       proto=socket.IPPROTO_TCP)]
            if resolve else [])  # fmt: skip
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}"
    bad = [a for a in addresses if _private(a)]
    if bad:
        return (f"{host!r} is a loopback, private or reserved address ({bad[0]}); set"
                " MILEPOST_WEBHOOK_ALLOW_PRIVATE=true to allow it")  # fmt: skip
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from RETRY_BASE_S, capped, +-20 %."""
    base = min(RETRY_BASE_S * 2.0 ** max(attempts - 1, 0), RETRY_MAX_S)
    return base * (0.8 + 0.4 * (rng or random).random())


_CLAIM: Final = (
    "UPDATE webhook_outbox o SET next_attempt_at = now() + make_interval(secs => %s)"
    " FROM webhook w WHERE w.webhook_id = o.webhook_id AND o.outbox_id IN ("
    "  SELECT outbox_id FROM webhook_outbox WHERE delivered_at IS NULL"
    "  AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING o.outbox_id, o.event_id, o.body::text, o.attempts, o.created_at, w.url,"
    " w.secret, w.deleted_at IS NOT NULL"
)


class WebhookSender:
    """Posts the outbox; see the module docstring."""

    def __init__(self, pool: AsyncConnectionPool, *, allow_private: bool) -> None:
        self._pool = pool
        self._allow_private = allow_private
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            while True:
                try:
                    claimed = await self._claim()
                except psycopg.OperationalError as exc:
                    log.debug("cannot read the webhook outbox (%s)", exc)
                    claimed = []
                if claimed:
                    async with asyncio.TaskGroup() as tg:
                        for i, row in enumerate(claimed):
                            tg.create_task(self._deliver(client, row), name=f"webhook-{i}")
                else:
                    await asyncio.sleep(1.0)

    async def backlog(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL"
                " AND next_attempt_at < 'infinity'")  # fmt: skip
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _claim(self) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_CLAIM, (LEASE_S, 4 * CONCURRENCY))
            return list(await cur.fetchall())

    async def _deliver(self, client: httpx.AsyncClient, row: tuple[Any, ...]) -> None:
        outbox_id, event_id, body_text, attempts, created_at, url, secret, deleted = row
        if deleted:
            await self._finish(outbox_id, None, "subscription deleted", give_up=True)
            return
        body = orjson.dumps(orjson.loads(body_text))  # compact, the bytes that are signed
        async with self._slots:
            status: int | None = None
            error: str | None = None
            loop = asyncio.get_running_loop()
            problem = await loop.run_in_executor(
                None, lambda: url_problem(url, allow_private=self._allow_private))
            if problem is not None:
                error = f"refused: {problem}"
            else:
                ts = int(time.time())
                headers = {"Content-Type": "application/json", "X-Milepost-Timestamp": str(ts),
                           "X-Milepost-Signature": sign(secret, ts, body),
                           "X-Milepost-Event-Id": str(event_id),
                           "User-Agent": "milepost-webhooks/1"}  # fmt: skip
                try:
                    async with asyncio.timeout(TIMEOUT_S):
                        r = await client.post(url, content=body, headers=headers)
                    status = r.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except (httpx.HTTPError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
        if error is None:
            self.delivered += 1
            await self._finish(outbox_id, status, None, delivered=True)
            return
        self.failed += 1
        age_s = time.time() - created_at.timestamp()
        give_up = age_s + backoff_s(attempts + 1) > GIVE_UP_S
        await self._finish(outbox_id, status, error, give_up=give_up, attempts=attempts + 1)

    async def _finish(self, outbox_id: int, status: int | None, error: str | None, *,
                      delivered: bool = False, give_up: bool = False,
                      attempts: int | None = None) -> None:  # fmt: skip
        if give_up and error is not None:
            error = f"gave up: {error}"
        delay = backoff_s(attempts or 1)
        for _ in range(5):  # the database may be restarting: the lease retries it anyway
            try:
                async with self._pool.connection() as conn:
                    await conn.execute(
                        "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = %s,"
                        " last_error = %s, delivered_at = CASE WHEN %s THEN now() END,"
                        " next_attempt_at = CASE WHEN %s THEN 'infinity'::timestamptz"
                        " WHEN %s THEN next_attempt_at"
                        " ELSE now() + make_interval(secs => %s) END WHERE outbox_id = %s",
                        (status, error, delivered, give_up, delivered, delay, outbox_id))
                return
            except psycopg.OperationalError:
                await asyncio.sleep(1.0)
