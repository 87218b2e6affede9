"""``milepost ingest``: MQTT -> decoders -> batches -> stages -> writer -> ack.

Tasks, all named and owned by one TaskGroup:

* ``mqtt``: the broker connection; hands messages, in order, to :meth:`Ingest.take` (in
  paho's callback: GPS JSON, at once) or to :meth:`Ingest.on_message` (everything else),
  which decode them into the open batch;
* ``batcher``: closes the open batch when it is due and queues it for the writer;
* ``prepare``: runs the stages over a closed batch and encodes what the writer sends,
  while the writer writes the batch before it;
* ``writer``: writes a prepared batch in one transaction, then acknowledges its messages
  to the broker;
* ``stats``: one log line every few seconds;
* ``gates``: a reader thread per manifest gate; ``passes``: closes the passes of quiet gates;
* ``plan``: (re)loads the manifest (geofences, parcels, routes) when it changes (a
  notification from the transaction that stored it; ``manifest``: the LISTEN
  connection), and every few seconds;
* ``inbox``: what was posted to the API: proofs of delivery (``pod_inbox``) and OsmAnd
  positions (``fix_inbox``), woken by a notification on the ``manifest`` connection;
* ``webhooks``: posts the webhook outbox (:mod:`ingest.webhooks`);
* ``retention``: drops old chunks every hour (:mod:`ingest.retention`).

The prepare task waits for the first plan; the processing order itself is
:class:`ingest.pipeline.Pipeline`.

Backpressure: at most ``MAX_CLOSED_BATCHES`` closed batches wait for the writer (one
closed, one prepared). When they are there and the open batch is due, messages go to
the ``mqtt`` task, which waits, and the broker stops sending once the receive window
(unacknowledged messages) is full. Nothing is dropped.
If the database is down, the writer retries the same batch with backoff; nothing is
acknowledged until it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from devices import fleet
from devices.errors import DecodeError
from devices.fleet import CargoScan
from devices.gps import json as gps_json
from devices.gps import nmea, osmand, owntracks, teltonika
from devices.records import GpsFix, fixes_to_array
from geo.fences import FenceSet
from geo.matching import TrackBuffer
from ingest import retention
from ingest.batch import Batch, DeadLetter, Drained
from ingest.manifest import MANIFEST_CHANNEL
from ingest.mqtt import AckToken, BrokerAddress, MqttSource
from ingest.parcels import (
    PodEvidence,
    load_plan,
)
from ingest.pipeline import (
    CLOCK_STATE,
    ETA_STATE,
    GEOFENCE_STATE,
    HOLD_STATE,
    INBOX_CHANNEL,
    PARCEL_STATE,
    TABLE_INSERTS,
    Pipeline,
)
from ingest.registry import Registry
from ingest.serial import GateChunk, GateSupervisor
from ingest.webhooks import WebhookSender
from ingest.writer import Prepared, Writer, datetime_to_us, us_to_datetime
from milepost.db import listen
from milepost.settings import Settings

log = logging.getLogger(__name__)

MAX_CLOSED_BATCHES = 2
PLAN_RELOAD_S = 5.0  # the manifest is read again at least this often
PLAN_MIN_GAP_S = 0.5  # and at most this often
PLAN_WAIT_S = 2.0  # how long a batch waits for the plan a stored manifest announced
DRAIN_S = 10.0  # on SIGTERM: at most this long to write and acknowledge what was taken
POD_SOURCE = "http:/v1/pod"
INBOX_POLL_S = 1.0  # the inboxes are read at least this often
INBOX_TAKE = 500  # rows of an inbox at a time
# what a decoder bug raises: the message goes to dead_letter, ingest goes on
INTERNAL_ERRORS = (ArithmeticError, ValueError, TypeError, KeyError, IndexError)
# unacknowledged messages the broker may have in flight to us: the local stack's
# Mosquitto sets max_inflight_messages to this
RECEIVE_MAXIMUM = 1000
# one line per format: fleet/{vehicle_id}/{kind} -> decoder
FLEET_DECODERS: dict[str, Callable[[bytes], list[GpsFix]]] = {
    "gps": gps_json.decode,
    "nmea": nmea.decode,
    "teltonika": teltonika.decode,
}


TOPICS = (*(f"fleet/+/{kind}" for kind in (*FLEET_DECODERS, "sensor", "cargo", "pod")),
          "owntracks/+/+")  # fmt: skip
_VEHICLE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# fleet/{vehicle_id}/gps topics already checked, and their vehicle: emptied when full
GPS_TOPICS_MAX = 100_000


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class Stats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    flushes: int = 0
    flush_s_total: float = 0.0
    flush_s_max: float = 0.0
    db_errors: int = 0
    reads: int = 0
    parcel_events: int = 0
    started: float = field(default_factory=time.monotonic)


def vehicle_from_topic(topic: str) -> tuple[str, str]:
    """``fleet/VAN-1/gps`` -> ("VAN-1", "gps"); raises DecodeError for anything else."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "fleet":
        raise DecodeError(f"unexpected topic {topic!r}")
    vehicle = parts[1]
    if not 1 <= len(vehicle) <= 64 or not set(vehicle) <= _VEHICLE_ID_CHARS:
        raise DecodeError(f"invalid vehicle id {vehicle!r} in topic")
    return vehicle, parts[2]


class UnknownDeviceError(DecodeError):
    """A device id that no vehicle is registered for."""


class Ingest:
    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, broker: BrokerAddress
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        self._writer = Writer(pool)
        # flush before the receive window fills, so a closed batch and an open one both fit
        self._batch = Batch(settings.batch_max_rows, RECEIVE_MAXIMUM // 2, settings.batch_max_ms)
        self._closed: asyncio.Queue[Drained] = asyncio.Queue(MAX_CLOSED_BATCHES - 1)
        self._unwritten = 0  # batches closed and not yet committed and acknowledged
        self._prepared: asyncio.Queue[tuple[Drained, Prepared]] = asyncio.Queue(1)
        self._wakeup = asyncio.Event()
        self._owntracks = Registry(pool, "owntracks_id")
        self.gates = GateSupervisor(pool, self.on_gate_chunk)
        self.pipeline = Pipeline(settings.mqtt_client_id)
        self._started_at = datetime.now(UTC)
        self.webhooks = WebhookSender(pool, allow_private=settings.webhook_allow_private)
        self._stops_key: object = None
        self._plan_ready = asyncio.Event()
        self._manifest_changed = asyncio.Event()
        # manifest notifications received, and the newest one a finished reload covers:
        # batches wait (a little) for the plan a notification announced
        self._notified = self._reloaded = 0
        # pod_inbox and fix_inbox rows handed to a batch not yet committed, by table
        self._inbox_taken: dict[str, set[int]] = {"pod_inbox": set(), "fix_inbox": set()}
        self._inbox_posted = asyncio.Event()  # a notification: the API stored a row
        self._inbox_open = True  # False once draining: the inboxes are no longer read
        self._cargo_looked_up: set[str] = set()  # vans whose last stored inventory was read
        self._pool = pool
        self._health: dict[tuple[str, int], str] = {}
        self._gps_topics: dict[str, str] = {}  # topic -> vehicle, see GPS_TOPICS_MAX
        self.mqtt = MqttSource(
            broker,
            client_id=settings.mqtt_client_id,
            topics=TOPICS,
            handler=self.on_message,
            take=self.take,
        )

    def take(self, topic: str, payload: bytes, token: AckToken) -> bool:
        """:meth:`on_message` for GPS JSON on a ``fleet/+/gps`` topic seen before, without a
        coroutine (paho's callback calls it on the event loop). False, to have
        :meth:`on_message` handle it in order: any other topic, or the batch is due and
        the writer is behind (on_message waits for it)."""
        vehicle = self._gps_topics.get(topic)
        batch = self._batch
        if vehicle is None or (self._closed.full() and batch.due()):
            return False
        self.stats.received += 1
        received = now_us()
        was_empty = batch.messages == 0
        try:
            items = gps_json.parse(payload)
        except DecodeError as exc:  # (the fixes themselves are checked when the batch drains)
            batch.add_dead(DeadLetter(received, topic, payload, str(exc)), token)
        else:
            batch.add_json(vehicle, items, received, topic, payload, token)
        if batch.due():
            if not self._closed.full():
                self._closed.put_nowait(batch.drain())
                self._unwritten += 1
        elif was_empty:
            self._wakeup.set()
        return True

    def _gps_vehicle(self, topic: str) -> str:
        """The vehicle of a fleet/{vehicle_id}/gps topic (DecodeError if it is not one)."""
        vehicle = self._gps_topics.get(topic)
        if vehicle is None:
            vehicle, _ = vehicle_from_topic(topic)
            if len(self._gps_topics) >= GPS_TOPICS_MAX:
                self._gps_topics.clear()
            self._gps_topics[topic] = vehicle
        return vehicle

    async def on_message(self, topic: str, payload: bytes, token: AckToken) -> None:
        """Decode one message into the open batch. The one place per-message errors are caught."""
        self.stats.received += 1
        received = now_us()
        was_empty = self._batch.messages == 0
        try:
            try:
                await self._route(topic, payload, received, token)
            except psycopg.OperationalError:  # a registry lookup met a database outage
                await self._with_db_retry(self._route, topic, payload, received, token)
        except DecodeError as exc:
            self._batch.add_dead(DeadLetter(received, topic, payload, str(exc)), token)
        except INTERNAL_ERRORS as exc:
            self._batch.add_dead(self._internal(received, topic, payload, exc), token)
        if self._batch.due():
            await self._close_batch()
        elif was_empty:
            self._wakeup.set()

    async def _with_db_retry(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn``, which may look something up in the database, until it gets an answer.

        While the database is down the message can neither be decoded nor stored, so the
        MQTT loop waits here (the broker holds the rest); it is never dropped."""
        delay, failed_at = 0.5, None
        while True:
            try:
                await fn(*args)
                break
            except psycopg.OperationalError as exc:
                if failed_at is None:
                    failed_at = time.monotonic()
                    log.warning("database lookup failed (%s); waiting for it", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if failed_at is not None:
            log.info("database lookups resumed after %.1f s", time.monotonic() - failed_at)

    async def _route(self, topic: str, payload: bytes, received: int, token: AckToken) -> None:
        """Decode one message into the open batch (DecodeError: the caller dead-letters it)."""
        if topic.endswith("/gps") and topic.startswith("fleet/"):  # the common case, first
            vehicle = self._gps_vehicle(topic)
            self._batch.add_json(vehicle, gps_json.parse(payload), received, topic, payload,
                                 token)  # fmt: skip
            return
        kind = topic.rsplit("/", 1)[-1]
        if topic.startswith("fleet/") and kind == "cargo":
            vehicle, _ = vehicle_from_topic(topic)
            self._batch.add_evidence("scans", await self._cargo_scan(vehicle, payload), token)
        elif topic.startswith("fleet/") and kind == "sensor":
            vehicle, _ = vehicle_from_topic(topic)
            row, temp = self.pipeline.sensor_row(vehicle, fleet.decode_sensor(payload))
            self._batch.add_row("sensor", row, token)
            if temp is not None:
                self._batch.add_evidence("sensor", temp)
        elif topic.startswith("fleet/") and kind == "pod":
            vehicle, _ = vehicle_from_topic(topic)
            pod = fleet.decode_pod(payload)
            book = self.pipeline.parcels
            if book.ready and book.book.parcel_of_tracking(
                    pod.tracking_number) < 0:  # fmt: skip
                raise DecodeError(f"proof of delivery for {pod.tracking_number!r}, which is no"
                                  " parcel of the manifest")  # fmt: skip
            self._batch.add_evidence("pod", PodEvidence(vehicle, pod), token)
        else:
            vehicle, fixes = await self._decode(topic, payload)
            self._batch.add_fixes(vehicle, fixes_to_array(fixes), received, token)

    async def _cargo_scan(self, vehicle: str, payload: bytes) -> tuple[str, CargoScan]:
        """An inventory for the batch (the pipeline compares it with the last one when it
        processes the batch, in event time); after a restart, a van's first one seeds the
        comparison with what was stored."""
        scan = fleet.decode_cargo(payload)
        cargo = self.pipeline.cargo
        if not cargo.known(vehicle) and vehicle not in self._cargo_looked_up:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT time, aboard FROM cargo_scan WHERE vehicle_id = %s"
                    " AND aboard IS NOT NULL ORDER BY time DESC LIMIT 1",
                    (vehicle,),
                )
                row = await cur.fetchone()
            if row is not None:
                cargo.seed(vehicle, datetime_to_us(row[0]), set(row[1]))
            self._cargo_looked_up.add(vehicle)
        return vehicle, scan

    async def on_gate_chunk(self, chunk: GateChunk) -> None:
        """Reads and dead letters from a gate's reader thread (called on the event loop)."""
        was_empty = self._batch.messages == 0
        self._batch.add_reads(chunk.gate_id, chunk.epcs, chunk.reads)
        for dead in chunk.dead:
            self._batch.add_dead(dead)
        for status in chunk.health:  # log a reader alarm when it appears, not per frame
            key = (chunk.gate_id, status.code)
            if self._health.get(key) != status.detail:
                self._health[key] = status.detail
                log.warning("gate %s: reader reports %s (0x%04X)", chunk.gate_id,
                            status.detail, status.code)  # fmt: skip
        if self._batch.due():
            await self._close_batch()
        elif was_empty:
            self._wakeup.set()

    async def _decode(self, topic: str, payload: bytes) -> tuple[str, list[GpsFix]]:
        if topic.startswith("owntracks/"):
            device = topic.removeprefix("owntracks/")
            fixes = owntracks.decode(payload)
            if not fixes:  # lwt, transition, waypoint...: nothing to store
                return "", fixes
            vehicle = await self._owntracks.vehicle_for(device)
            if vehicle is None:
                raise UnknownDeviceError(
                    f"no vehicle for OwnTracks device {device!r}; register it with"
                    f" `milepost devices add VEHICLE_ID --owntracks {device}`"
                )
            return vehicle, fixes
        vehicle, kind = vehicle_from_topic(topic)
        decoder = FLEET_DECODERS.get(kind)
        if decoder is None:
            raise DecodeError(f"no decoder for topic kind {kind!r}")
        return vehicle, decoder(payload)

    async def _close_batch(self) -> None:
        drained = self._batch.drain()
        self._unwritten += 1
        try:
            await self._closed.put(drained)  # waits while the writer is behind: backpressure
        except BaseException:  # cancelled (a stop that ran out of time): never written
            self._unwritten -= 1
            raise

    async def run_batcher(self) -> None:
        while True:
            self._wakeup.clear()
            if self._batch.messages == 0:
                await self._wakeup.wait()
                continue
            await asyncio.sleep(self._batch.seconds_until_due())
            if self._batch.due():
                await self._close_batch()

    async def run_prepare(self) -> None:
        """Closed batches through the stages, encoded for the writer, in order."""
        await self._plan_ready.wait()  # the parcel stage needs the plan before any evidence
        while True:
            drained = await self._closed.get()
            deadline = time.monotonic() + PLAN_WAIT_S
            while self._reloaded < self._notified and time.monotonic() < deadline:
                await asyncio.sleep(0.005)  # a manifest was stored: its plan first
            self._sync_roles()  # the gates' antenna roles, as the manifest has them now
            result = self.pipeline.process(drained)
            self.stats.parcel_events += len(drained.rows.get("parcel_event", ()))
            prepared = self._writer.prepare(
                result.frame, drained.dead + result.rejected, drained.reads,
                [(TABLE_INSERTS[k], rows) for k, rows in drained.rows.items()],
            )  # fmt: skip
            await self._prepared.put((drained, prepared))
            await self._prepared.join()  # the writer has it: so at most one waits prepared

    async def run_writer(self) -> None:
        while True:
            drained, prepared = await self._prepared.get()
            self._prepared.task_done()  # (the next batch is prepared while this one is written)
            delay = 0.5
            failed_at: float | None = None
            while True:
                t0 = time.perf_counter()
                try:
                    flushed = await self._writer.write(prepared)
                    break
                except psycopg.OperationalError as exc:  # includes the pool's PoolTimeout
                    self.stats.db_errors += 1
                    if failed_at is None:
                        failed_at = time.monotonic()
                        log.warning("database write failed (%s); holding the batch, retrying"
                                    " with backoff, acknowledging nothing", exc)  # fmt: skip
                    else:
                        log.debug("database write failed again (%s)", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            if failed_at is not None:
                log.info("database writes resumed after %.1f s", time.monotonic() - failed_at)
            dt = time.perf_counter() - t0
            self.mqtt.ack(drained.tokens)
            self._unwritten -= 1
            s = self.stats
            s.stored += flushed.stored
            s.duplicates += flushed.duplicates
            s.rejected += flushed.dead
            s.reads += flushed.reads
            s.flushes += 1
            s.flush_s_total += dt
            s.flush_s_max = max(s.flush_s_max, dt)

    async def run_plan(self) -> None:
        """Load the manifest (stops' geofences, parcels, routes, gates, vans' tags), and
        again whenever it changes; after a restart, the parcels' states from parcel_latest."""
        last = -math.inf
        while True:
            gap = time.monotonic() - last
            if gap < PLAN_MIN_GAP_S:  # a burst of stored manifests: one reload per gap
                await asyncio.sleep(PLAN_MIN_GAP_S - gap)
            last = time.monotonic()
            self._manifest_changed.clear()  # this reload reads what they stored
            covers = self._notified
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT stop_id, kind, geofence, radius_m FROM stop ORDER BY stop_id"
                    )
                    rows = await cur.fetchall()
                    plan = await load_plan(conn)
                    seed: list[tuple[str, str, str | None, str | None, int, bool, bool,
                                     float | None]] = []  # fmt: skip
                    state = geofences = etas = clocks = held = None
                    newest: dict[str, tuple[int, float, float]] = {}
                    since: tuple[list[Any], list[Any]] = ([], [])  # ETA catch-up
                    if not self._plan_ready.is_set():
                        cur = await conn.execute(
                            "SELECT name, state FROM ingest_state WHERE instance = %s"
                            " AND name IN (%s, %s, %s, %s, %s)",
                            (self.pipeline.instance, PARCEL_STATE, GEOFENCE_STATE, ETA_STATE,
                             CLOCK_STATE, HOLD_STATE))  # fmt: skip
                        states: dict[str, Any] = dict(await cur.fetchall())
                        state, geofences = states.get(PARCEL_STATE), states.get(GEOFENCE_STATE)
                        etas, clocks = states.get(ETA_STATE), states.get(CLOCK_STATE)
                        held = states.get(HOLD_STATE)
                        if etas:
                            since = await self._since_eta_state(conn, etas, plan.routes)
                        if held:  # first, for the geofence tracker's last fixes
                            held_ok, _ = self._restoring("the late data held back",
                                                         self.pipeline.restore_hold, held)
                            held = held if held_ok else None
                        if geofences:  # the vans' newest fixes: the tracker's last ones
                            cur = await conn.execute(
                                "SELECT vehicle_id, time, lon, lat FROM vehicle_latest")
                            newest = {r[0]: (datetime_to_us(r[1]), r[2], r[3])
                                      for r in await cur.fetchall()}  # fmt: skip
                            # but a held van's tracker saw only what came before its hold
                            for van, since_us in self.pipeline.hold.since().items():
                                cur = await conn.execute(
                                    "SELECT time, lon, lat FROM gps_fix WHERE vehicle_id = %s"
                                    " AND received_at < %s ORDER BY time DESC LIMIT 1",
                                    (van, us_to_datetime(since_us)))  # fmt: skip
                                row = await cur.fetchone()
                                if row is None:
                                    newest.pop(van, None)
                                else:
                                    newest[van] = (datetime_to_us(row[0]), row[1], row[2])
                        cur = await conn.execute(
                            "SELECT l.tracking_number, l.status, l.sub_status, l.vehicle_id,"
                            " l.time, EXISTS (SELECT FROM parcel_event e WHERE e.tracking_number"
                            " = l.tracking_number AND e.sub_status = 'Exception_LATE'),"
                            " EXISTS (SELECT FROM parcel_event e WHERE e.tracking_number"
                            " = l.tracking_number AND e.sub_status = 'Exception_COLD_CHAIN'),"
                            " l.confidence FROM parcel_latest l")  # fmt: skip
                        seed = [(*r[:4], datetime_to_us(r[4]), r[5], r[6], r[7])
                                for r in await cur.fetchall()]  # fmt: skip
                key = tuple((r[0], r[1], orjson.dumps(r[2]), r[3]) for r in rows)
                if key != self._stops_key:
                    columns: list[tuple[Any, ...]] = (
                        list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
                    )
                    fences = FenceSet.from_stops(*columns)
                    self.pipeline.set_fences(fences)
                    self._stops_key = key
                    log.info("geofences: %d stops", len(fences))
                if self.pipeline.set_plan(plan):
                    log.info("plan: %d parcels, %d routes, %d gates",
                             len(plan.parcels.tracking_number), len(plan.routes),
                             len(plan.gate_dock))  # fmt: skip
                if seed:
                    self.pipeline.parcels.seed(seed)
                if state:
                    self._restore(state)
                if geofences:
                    self._restore_geofences(geofences, newest)
                if etas:
                    self._restore_etas(etas, *since)
                if clocks:
                    ok, n = self._restoring("the vans' clock offsets",
                                            self.pipeline.restore_clocks, clocks)  # fmt: skip
                    if ok and n:
                        log.info("clocks: restored the offsets of %d vans whose clock is off"
                                 " (%s)", n, ", ".join(self.pipeline.clocks.offsets))  # fmt: skip
                if held and (n := len(self.pipeline.hold.vans)):
                    log.info("held: restored %d late fixes of %d vans, to go to the stages"
                                 " in time order", self.pipeline.hold.fixes_held(), n)  # fmt: skip
                self._plan_ready.set()
            except psycopg.OperationalError as exc:
                log.debug("cannot read the manifest (%s); keeping the plan", exc)
            except ValueError as exc:
                log.warning("stops not usable as geofences (%s); keeping the previous ones", exc)
            self._reloaded = max(self._reloaded, covers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._manifest_changed.wait(), PLAN_RELOAD_S)

    def _restore(self, state: Any) -> None:
        """The parcel stage's state between events, from ingest_state."""
        if self._restoring("the parcel stage's state", self.pipeline.restore_state, state)[0]:
            counts = self.pipeline.parcels.book.pending_counts()
            log.info("parcel stage: restored %d attempts and %d cargo removals waiting to"
                     " settle", *counts)  # fmt: skip

    def _restore_geofences(self, snapshot: Any, last: dict[str, tuple[int, float, float]]
                           ) -> None:  # fmt: skip
        """The geofence visits in progress, from ingest_state (without them a van inside a
        stop at a crash would enter it again, and its dwell restart)."""
        ok, n = self._restoring("the geofence visits", self.pipeline.restore_geofences,
                                snapshot, last)  # fmt: skip
        if ok:
            log.info("geofences: restored %d visits in progress", n)

    def _restore_etas(self, state: Any, fixes: list[Any], fences: list[Any]) -> None:
        """What the ETA estimator had learned and predicted, from ingest_state, caught up
        with the fixes and geofence events stored since (without it every van's visited
        stops, speeds and windows would start again from the priors)."""
        ok, n = self._restoring("the ETA estimator", self.pipeline.restore_etas, state, fixes,
                                fences)  # fmt: skip
        if ok:
            log.info("etas: restored %d vans, caught up with %d fixes and %d geofence events",
                     n, len(fixes), len(fences))  # fmt: skip

    @staticmethod
    def _restoring(what: str, restore: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """``(True, restore(*args))``; whatever the row holds, ingest starts: ``(False,
        None)`` and a warning when it cannot be restored."""
        try:
            return True, restore(*args)
        except Exception as exc:  # a row this version cannot read
            log.warning("ingest_state: cannot restore %s (%r); starting without it", what, exc)
            return False, None

    @staticmethod
    async def _since_eta_state(conn: psycopg.AsyncConnection[Any], state: Any,
                               routes: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        """The fixes and geofence events (enter, exit) stored since the ETA state was
        written, for the vans of the plan: per van, from a track horizon before its newest
        fix in the state (the catch-up tells the estimator only what is newer, and only
        what a second telling cannot spoil)."""
        last = state.get("last_fix") if isinstance(state, dict) else None
        if not isinstance(last, dict):
            return [], []
        horizon = TrackBuffer().horizon_us
        try:
            newest = {str(v): int(t) for v, t in last.items()}
            default = max(newest.values(), default=None)  # vans without a fix in the state
            bounds = {v: us_to_datetime(t - horizon) for v in {*newest, *routes}
                      if (t := newest.get(v, default)) is not None}  # fmt: skip
        except (TypeError, ValueError, OverflowError):  # not times: restore_etas says so
            return [], []
        if not bounds:
            return [], []
        vans, times = list(bounds), list(bounds.values())
        cur = await conn.execute(
            "SELECT f.vehicle_id, f.time, f.lon, f.lat, f.speed_mps FROM"
            " unnest(%s::text[], %s::timestamptz[]) AS s (v, t) JOIN gps_fix f"
            " ON f.vehicle_id = s.v AND f.time > s.t WHERE f.time > %s",
            (vans, times, min(times)))  # fmt: skip (the constant bound skips old chunks)
        fixes = [(r[0], datetime_to_us(r[1]), r[2], r[3], math.nan if r[4] is None else r[4])
                 for r in await cur.fetchall()]  # fmt: skip
        cur = await conn.execute(
            "SELECT g.time, g.vehicle_id, g.stop_id, g.kind FROM"
            " unnest(%s::text[], %s::timestamptz[]) AS s (v, t) JOIN geofence_event g"
            " ON g.vehicle_id = s.v AND g.time > s.t AND g.kind IN ('enter', 'exit')"
            " WHERE g.time > %s", (vans, times, min(times)))  # fmt: skip
        fences = [(datetime_to_us(r[0]), *r[1:]) for r in await cur.fetchall()]
        return fixes, fences

    async def run_manifest_listen(self) -> None:
        """LISTEN for stored manifests, so the plan and the gates follow one at once rather
        than at the next reload (evidence of a van that leaves right after its manifest
        was loaded would meet the old plan); reconnects with backoff (an optimisation: the
        reload every few seconds goes on without it)."""
        lost = False

        def up() -> None:
            nonlocal lost
            if lost:
                log.info("manifest notifications: listening again")
            lost = False
            self._manifest_changed.set()  # what changed while it was not listening
            self.gates.wake()

        def notified(channel: str, _payload: str) -> None:
            if channel == INBOX_CHANNEL:
                self._inbox_posted.set()
                return
            self._notified += 1
            self._manifest_changed.set()
            self.gates.wake()

        def down(exc: Exception) -> None:
            nonlocal lost
            if not lost:
                log.warning("manifest notifications: %s; reconnecting (the manifest is still"
                            " re-read every %g s)", exc, PLAN_RELOAD_S)  # fmt: skip
            lost = True

        await listen(self.settings.database_url, (MANIFEST_CHANNEL, INBOX_CHANNEL),
                     on_notify=notified, on_up=up, on_down=down)  # fmt: skip

    def _sync_roles(self) -> None:
        self.pipeline.set_roles({(gid, ant): role for gid, r in self.gates.readers.items()
                                 for ant, role in r.gate.antennas.items()})  # fmt: skip

    async def run_passes(self) -> None:
        """Close the passes of gates that went quiet (no read for the gap, by the clock that
        stamps serial reads), so a parcel's pass does not wait for the next parcel; and let
        late data held back go once its time came (ingest/hold.py), messages or not."""
        while True:
            await asyncio.sleep(1.0)
            t = now_us()
            if self.pipeline.hold.due(t):
                self._batch.add_evidence("clock", t)
                self._wakeup.set()
            readers = [r for r in self.gates.readers.values() if r.connected]
            if self.pipeline.passes.open_count and readers:
                self._sync_roles()
                # only as far as every reader has handed over what it read: a reader
                # blocked by back-pressure must not see its parcels' passes cut short
                horizon = min(r.delivered_us for r in readers)
                closed = self.pipeline.flush_passes(horizon)
                if len(closed):
                    self._batch.add_evidence("passes", closed)
                if self._batch.messages:
                    self._wakeup.set()

    async def run_inbox(self) -> None:
        """What was posted to the API: proofs of delivery (``pod_inbox``) and OsmAnd
        positions (``fix_inbox``), into the open batch, and marked processed by the
        transaction that writes what they caused. A restart reads again whatever was not
        marked, so each is applied once. Woken by the API's notification, and every
        second without one; at once again while a read fills its page (a backlog)."""
        full = False
        while self._inbox_open:
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._inbox_posted.wait(), INBOX_POLL_S)
                self._inbox_posted.clear()
            try:
                async with self._pool.connection() as conn:
                    pods = await self._unhanded(conn, "pod_inbox", "pod_id",
                                                "vehicle_id, payload")  # fmt: skip
                    fixes = await self._unhanded(conn, "fix_inbox", "inbox_id",
                                                 "received_at, vehicle_id, source, json,"
                                                 " payload")  # fmt: skip
            except psycopg.OperationalError as exc:
                log.debug("cannot read the inboxes (%s)", exc)
                full = False
                continue
            if not self._inbox_open:  # draining: the next ingest reads them
                return
            # handed to the batch from here on (and read again only after a restart)
            self._inbox_taken["pod_inbox"].update(r[0] for r in pods)
            self._inbox_taken["fix_inbox"].update(r[0] for r in fixes)
            for pod_id, vehicle, payload in pods:
                try:
                    pod = fleet.decode_pod(bytes(payload))
                except DecodeError as exc:  # the API validated it; a newer decoder may not
                    self._batch.add_dead(DeadLetter(now_us(), POD_SOURCE, bytes(payload),
                                                    str(exc)))  # fmt: skip
                except INTERNAL_ERRORS as exc:
                    self._batch.add_dead(self._internal(now_us(), POD_SOURCE, bytes(payload),
                                                        exc))  # fmt: skip
                else:
                    self._batch.add_evidence("pod", PodEvidence(vehicle, pod))
                self._batch.add_row("pod_done", (pod_id,))
                await self._close_if_due()
            for inbox_id, received_at, vehicle, source, json_mode, payload in fixes:
                received = datetime_to_us(received_at)
                try:  # the API decoded it already, and a newer decoder may not
                    msg = osmand.decode_request(bytes(payload), json_mode=json_mode,
                                                now_us=received)  # fmt: skip
                    found = fixes_to_array(msg.fixes)
                except DecodeError as exc:
                    self._batch.add_dead(DeadLetter(received, source, bytes(payload), str(exc)))
                except INTERNAL_ERRORS as exc:
                    self._batch.add_dead(self._internal(received, source, bytes(payload), exc))
                else:
                    self.stats.received += 1
                    self._batch.add_fixes(vehicle, found, received)
                self._batch.add_row("fix_done", (inbox_id,))
                await self._close_if_due()
            if pods or fixes:
                self._wakeup.set()
            full = INBOX_TAKE in (len(pods), len(fixes))

    async def _close_if_due(self) -> None:
        if self._batch.due():
            await self._close_batch()

    @staticmethod
    def _internal(received: int, source: str, payload: bytes, exc: Exception) -> DeadLetter:
        """A decoder bug must not take ingest down (and the message back with it on every
        restart): the message is kept in dead_letter, with the error."""
        log.exception("unexpected error decoding a message from %s", source)
        return DeadLetter(received, source, payload,
                          f"internal error: {type(exc).__name__}: {exc}")  # fmt: skip

    async def _unhanded(self, conn: psycopg.AsyncConnection[Any], table: str, key: str,
                        columns: str) -> list[tuple[Any, ...]]:  # fmt: skip
        """The oldest rows of an inbox not yet processed nor handed to a batch; forgets the
        handed rows whose batch has committed (the caller marks what it hands over)."""
        taken = self._inbox_taken[table]
        # not a high-water mark: ids commit out of order under concurrent posts
        cur = await conn.execute(
            f"SELECT {key}, {columns} FROM {table} WHERE processed_at IS NULL"
            f" AND NOT {key} = ANY(%s) ORDER BY {key} LIMIT {INBOX_TAKE}", (list(taken),))
        rows = await cur.fetchall()
        if taken:
            cur = await conn.execute(f"SELECT {key} FROM {table} WHERE {key} = ANY(%s)"
                                     " AND processed_at IS NOT NULL", (list(taken),))
            taken -= {r[0] for r in await cur.fetchall()}
        return rows

    async def run_stats(self) -> None:
        last = Stats()
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            s = self.stats
            flushes = s.flushes - last.flushes
            avg_ms = (s.flush_s_total - last.flush_s_total) / flushes * 1000 if flushes else 0.0
            log.info(
                "received %d msgs (+%d), stored %d fixes (+%d), %d tag reads (+%d),"
                " %d parcel events, duplicates %d, rejected %d,"
                " %d flushes avg %.1f ms max %.1f ms,"
                " open batch %d rows, %d batches waiting, broker %s, gates %d/%d up,"
                " webhooks %d delivered %d failed",
                s.received, s.received - last.received, s.stored, s.stored - last.stored,
                s.reads, s.reads - last.reads, s.parcel_events, s.duplicates, s.rejected,
                flushes, avg_ms,
                s.flush_s_max * 1000, self._batch.rows, self.batches_waiting(),
                "connected" if self.mqtt.connected else "DISCONNECTED",
                sum(r.connected for r in self.gates.readers.values()), len(self.gates.readers),
                self.webhooks.delivered, self.webhooks.failed,
            )  # fmt: skip
            last = dataclasses.replace(s)
            await self._publish_stats(flushes)
            s.flush_s_max = 0.0

    def batches_waiting(self) -> int:
        """Closed batches the writer has not taken yet (prepared or not)."""
        return self._closed.qsize() + self._prepared.qsize()

    def metrics(self) -> dict[str, float]:
        """Counters and gauges for GET /metrics (names without the milepost_ingest_ prefix)."""
        s = self.stats
        return {
            "messages_received_total": s.received, "fixes_stored_total": s.stored,
            "fixes_duplicate_total": s.duplicates, "rejected_total": s.rejected,
            "tag_reads_total": s.reads, "parcel_events_total": s.parcel_events,
            "flushes_total": s.flushes, "flush_seconds_total": round(s.flush_s_total, 6),
            "flush_seconds_max": round(s.flush_s_max, 6), "db_errors_total": s.db_errors,
            "open_batch_rows": self._batch.rows, "batches_waiting": self.batches_waiting(),
            "broker_connected": int(self.mqtt.connected),
            "gates_up": sum(r.connected for r in self.gates.readers.values()),
            "gates": len(self.gates.readers),
            "webhooks_delivered_total": self.webhooks.delivered,
            "webhooks_failed_total": self.webhooks.failed,
        }  # fmt: skip

    async def _publish_stats(self, _flushes: int) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO ingest_stats (instance, started_at, stats)"
                    " VALUES (%s, %s, %s) ON CONFLICT (instance) DO UPDATE SET"
                    " stats = excluded.stats, started_at = excluded.started_at,"
                    " updated_at = now()",
                    (self.settings.mqtt_client_id, self._started_at, Jsonb(self.metrics())),
                )
        except psycopg.OperationalError as exc:
            log.debug("cannot store the stats (%s)", exc)

    async def drain(self, timeout_s: float = DRAIN_S) -> bool:
        """The graceful end (SIGTERM, Ctrl-C), before the tasks are cancelled: the gates'
        readers stop and hand over what they read, the broker's messages are no longer
        taken (unacknowledged, they go to the next session), passes still open are closed,
        and everything taken is written and acknowledged. False when ``timeout_s`` ran out
        first (the database is down, say): then what was not written is not acknowledged
        either, and the broker delivers it again; only serial reads of that rest are lost,
        as they are in a crash."""
        deadline = time.monotonic() + timeout_s
        self.mqtt.close_intake()
        self._inbox_open = False
        self._inbox_posted.set()
        if not await self.gates.stop(max(0.0, deadline - time.monotonic())):
            log.warning("a gate's reader did not stop in time; its last reads may be lost")
            return False
        if not await self._write_all(deadline):
            return False
        # the reads just written opened passes that no quiet gap will close now
        closed = self.pipeline.flush_passes(None)
        if len(closed):
            self._batch.add_evidence("passes", closed)
        return await self._write_all(deadline)

    async def _write_all(self, deadline: float) -> bool:
        """Close the open batch and wait until every closed one is written, by ``deadline``."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._batch.messages:
                try:
                    await asyncio.wait_for(self._close_batch(), left)
                except TimeoutError:
                    return False
            if self._unwritten == 0 and self._batch.messages == 0:
                return True
            await asyncio.sleep(0.01)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until cancelled, or until ``stop`` is set: then :meth:`drain` and end."""
        # A backlog drained after an outage puts tens of thousands of message objects in
        # flight at once, and the default collector thresholds then run full collections
        # that grow with it (py-spy: a quarter of a drain). Freeze what start-up allocated
        # and collect the young generation less often.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        async with asyncio.TaskGroup() as tg:
            tasks = self._start(tg)
            if stop is not None:
                await stop.wait()
                t0 = time.monotonic()
                log.info("stopping: taking no more messages; writing what was taken")
                s = self.stats
                stored, reads = s.stored, s.reads
                if await self.drain():
                    log.info("stopped in %.1f s: the last %d fixes and %d reads written and"
                             " acknowledged; in all %d fixes stored, duplicates %d",
                             time.monotonic() - t0, s.stored - stored, s.reads - reads,
                             s.stored, s.duplicates)  # fmt: skip
                else:
                    log.warning("stopping after %.0f s with batches not written (the broker"
                                " delivers their messages again)", DRAIN_S)  # fmt: skip
                for task in tasks:
                    task.cancel()

    def _start(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[Any]]:
        return [
            tg.create_task(self.mqtt.run(), name="mqtt"),
            tg.create_task(self.run_batcher(), name="batcher"),
            tg.create_task(self.run_prepare(), name="prepare"),
            tg.create_task(self.run_writer(), name="writer"),
            tg.create_task(self.run_stats(), name="stats"),
            tg.create_task(self.gates.run(), name="gates"),
            tg.create_task(self.run_passes(), name="passes"),
            tg.create_task(self.run_plan(), name="plan"),
            tg.create_task(self.run_manifest_listen(), name="manifest"),
            tg.create_task(self.run_inbox(), name="inbox"),
            tg.create_task(self.webhooks.run(), name="webhooks"),
            tg.create_task(
                retention.run(
                    self._pool,
                    retention.Policy(
                        self.settings.retention_raw_days, self.settings.retention_events_days
                    ),
                ),
                name="retention",
            ),
        ]


async def serve(settings: Settings, mqtt_credentials: tuple[str, str] | None) -> None:
    """Run ingest until SIGTERM or SIGINT (then drain: see :meth:`Ingest.drain`), or until
    cancelled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:  # a second one ends at once, what is unwritten unacknowledged
        if stop.is_set() and main is not None:
            main.cancel()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    ca_file = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
    broker = BrokerAddress.from_url(settings.mqtt_url, mqtt_credentials, ca_file)
    pool = AsyncConnectionPool(
        settings.database_url, min_size=1, max_size=settings.db_pool_max, open=False,
        name="ingest", check=AsyncConnectionPool.check_connection,
    )  # fmt: skip
    await pool.open(wait=False)
    try:
        await Ingest(settings, pool, broker).run(stop)
    finally:
        await pool.close()
