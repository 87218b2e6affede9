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
CONNECT_TIMEOUT_S: Final = 5.0
CONCURRENCY: Final = 8  # deliveries in flight to healthy receivers
PER_WEBHOOK: Final = 4  # of which to one receiver at most
PROBE_SLOTS: Final = 2  # deliveries in flight to failing receivers, one each
PAUSE_MAX_S: Final = 300.0  # a failing receiver is tried again at least this often
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


# Rows due for delivery, at most ``per`` of each subscription (its oldest), the oldest
# first; ``skip`` names subscriptions not to take (in flight or failing), ``only`` (when
# not NULL) the ones to take. One index range scan a subscription (webhook_outbox_next_idx)
# however long a dead receiver's backlog. The UPDATE re-checks each row under its lock, so
# two senders never take the same row.
_CLAIM: Final = (
    "UPDATE webhook_outbox o SET next_attempt_at = now() + make_interval(secs => %(lease)s)"
    " FROM webhook w WHERE w.webhook_id = o.webhook_id AND o.delivered_at IS NULL"
    " AND o.next_attempt_at <= now() AND o.outbox_id IN ("
    "  SELECT d.outbox_id FROM webhook s CROSS JOIN LATERAL ("
    "   SELECT x.outbox_id, x.next_attempt_at FROM webhook_outbox x"
    "   WHERE x.webhook_id = s.webhook_id AND x.delivered_at IS NULL"
    "   AND x.next_attempt_at <= now() ORDER BY x.next_attempt_at LIMIT %(per)s) d"
    "  WHERE s.webhook_id <> ALL (%(skip)s::bigint[])"
    "  AND (%(only)s::bigint[] IS NULL OR s.webhook_id = ANY (%(only)s::bigint[]))"
    "  ORDER BY d.next_attempt_at LIMIT %(limit)s)"
    " RETURNING o.outbox_id, o.webhook_id, o.event_id, o.body::text, o.attempts, o.created_at,"
    " w.url, w.secret, w.deleted_at IS NOT NULL"
)

# rows past GIVE_UP_S that a failing receiver's pauses kept from their last attempt
_EXPIRE: Final = (
    "UPDATE webhook_outbox SET next_attempt_at = 'infinity',"
    " last_error = 'gave up: ' || coalesce(last_error, 'never attempted')"
    " WHERE delivered_at IS NULL AND next_attempt_at < 'infinity'"
    " AND created_at < now() - make_interval(secs => %s)"
)


class ReceiverHealth:
    """Which subscriptions are failing, and when each may be tried again (pure).

    A subscription whose last delivery failed is *failing*: its rows leave the main lane
    and are tried one at a time in the probe lane, no sooner than ``backoff_s`` of its
    consecutive failures (at most :data:`PAUSE_MAX_S`); a success puts it back. So a
    receiver that is down, slow or gone holds at most a probe slot, never the deliveries
    of the others. Kept in memory: after a restart every subscription starts healthy and
    a failing one is found out by its first attempts.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._failures: dict[int, int] = {}
        self._retry_at: dict[int, float] = {}
        self._rng = rng

    def failing(self) -> list[int]:
        return list(self._failures)

    def due(self, now: float) -> list[int]:
        """Failing subscriptions whose pause is over, the longest waiting first."""
        return [w for t, w in sorted((t, w) for w, t in self._retry_at.items() if t <= now)]

    def succeeded(self, webhook_id: int) -> None:
        self._failures.pop(webhook_id, None)
        self._retry_at.pop(webhook_id, None)

    def failed(self, webhook_id: int, now: float) -> float:
        """Record a failure; returns the pause in seconds before the next probe."""
        n = self._failures.get(webhook_id, 0) + 1
        self._failures[webhook_id] = n
        pause = min(backoff_s(n, self._rng), PAUSE_MAX_S)
        self._retry_at[webhook_id] = max(self._retry_at.get(webhook_id, 0.0), now + pause)
        return pause

    def idle(self, webhook_id: int, now: float) -> None:
        """A probe found nothing due: wait another pause before looking again."""
        n = self._failures.get(webhook_id)
        if n is not None:
            self._retry_at[webhook_id] = now + min(backoff_s(n, self._rng), PAUSE_MAX_S)


class WebhookSender:
    """Posts the outbox; see the module docstring.

    Two lanes: healthy subscriptions share :data:`CONCURRENCY` slots (at most
    :data:`PER_WEBHOOK` deliveries of one at a time); failing ones (see
    :class:`ReceiverHealth`) share :data:`PROBE_SLOTS`, one probe each. A slot is refilled
    as soon as its delivery ends, so one slow answer delays nothing but itself.
    """

    def __init__(self, pool: AsyncConnectionPool, *, allow_private: bool) -> None:
        self._pool = pool
        self._allow_private = allow_private
        self._health = ReceiverHealth()
        self._in_flight: dict[int, int] = {}  # webhook_id: deliveries in flight
        self._busy = {"main": 0, "probe": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        timeout = httpx.Timeout(TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            next_expiry = 0.0
            try:
                while True:
                    try:
                        if time.monotonic() >= next_expiry:
                            await self._expire()
                            next_expiry = time.monotonic() + 60.0
                        claimed = await self._claim()
                    except psycopg.OperationalError as exc:
                        log.debug("cannot read the webhook outbox (%s)", exc)
                        claimed = []
                    for lane, row in claimed:
                        self._start(client, lane, row)
                    full = self._busy["main"] >= CONCURRENCY
                    if not claimed or full:  # a slot to fill, or new rows, within a second
                        if self._tasks:
                            await asyncio.wait(self._tasks, timeout=1.0,
                                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                        else:
                            await asyncio.sleep(1.0)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def backlog(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL"
                " AND next_attempt_at < 'infinity'")  # fmt: skip
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _expire(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_EXPIRE, (GIVE_UP_S,))

    async def _claim(self) -> list[tuple[str, tuple[Any, ...]]]:
        failing = self._health.failing()
        claimed: list[tuple[str, tuple[Any, ...]]] = []
        async with self._pool.connection() as conn:
            free = CONCURRENCY - self._busy["main"]
            if free > 0:
                cur = await conn.execute(_CLAIM, {
                    "lease": LEASE_S, "per": PER_WEBHOOK, "limit": free, "only": None,
                    "skip": [*self._in_flight, *failing]})  # fmt: skip
                claimed += [("main", row) for row in await cur.fetchall()]
            now = time.monotonic()
            free = PROBE_SLOTS - self._busy["probe"]
            # the longest waiting first, as many as there are slots: none left out by LIMIT
            due = [w for w in self._health.due(now) if w not in self._in_flight][:max(free, 0)]
            if due:
                cur = await conn.execute(_CLAIM, {"lease": LEASE_S, "per": 1, "limit": free,
                                                  "only": due, "skip": []})  # fmt: skip
                rows = await cur.fetchall()
                claimed += [("probe", row) for row in rows]
                for w in set(due) - {row[1] for row in rows}:
                    self._health.idle(w, now)  # nothing of it due yet: look again later
        return claimed

    def _start(self, client: httpx.AsyncClient, lane: str, row: tuple[Any, ...]) -> None:
        webhook_id = row[1]
        self._busy[lane] += 1
        self._in_flight[webhook_id] = self._in_flight.get(webhook_id, 0) + 1

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._busy[lane] -= 1
            left = self._in_flight[webhook_id] - 1
            if left:
                self._in_flight[webhook_id] = left
            else:
                del self._in_flight[webhook_id]
            if not task.cancelled() and task.exception() is not None:
                log.error("webhook delivery failed unexpectedly", exc_info=task.exception())

        task = asyncio.create_task(self._deliver(client, row), name=f"webhook-{row[0]}")
        self._tasks.add(task)
        task.add_done_callback(done)

    async def _deliver(self, client: httpx.AsyncClient, row: tuple[Any, ...]) -> None:
        outbox_id, webhook_id, event_id, body_text, attempts, created_at, url, secret, deleted = row
        if deleted:
            await self._finish(outbox_id, None, "subscription deleted", give_up=True)
            return
        body = orjson.dumps(orjson.loads(body_text))  # compact, the bytes that are signed
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
            self._health.succeeded(webhook_id)
            await self._finish(outbox_id, status, None, delivered=True)
            return
        self.failed += 1
        self._health.failed(webhook_id, time.monotonic())
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
