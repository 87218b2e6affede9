"""The live hub of ``milepost api``: one LISTEN connection, fanned out to every client of
``GET /v1/live``.

``milepost ingest`` sends ``pg_notify('milepost_live', ...)`` in each batch's transaction
(``ingest.pipeline.live_messages``), so a notification arrives exactly when what it
describes is committed. The hub turns each into SSE messages (``position``, ``parcel``,
``exception``), numbers them ``<epoch>-<n>`` (the epoch is this process's start), keeps
the last ``RING`` of them for ``Last-Event-ID`` resume, and puts them on every client's
queue. A client's queue holds at most ``CLIENT_QUEUE`` messages; a client that falls that
far behind is disconnected (its browser reconnects and resumes) instead of slowing the
others or growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from milepost.db import listen

log = logging.getLogger(__name__)

CHANNEL: Final = "milepost_live"
RING: Final = 10_000
CLIENT_QUEUE: Final = 2_000


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    event: str  # position | parcel | exception
    vehicle_id: str | None
    data: bytes  # JSON

    def sse(self) -> bytes:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (self.id.encode(), self.event.encode(),
                                                      self.data)  # fmt: skip


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity: a set of clients
class Client:
    vehicles: frozenset[str] | None
    queue: asyncio.Queue[Message | None] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))

    def wants(self, m: Message) -> bool:
        return self.vehicles is None or m.vehicle_id in self.vehicles


def iso_us(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def messages(payload: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """A notification's (event, vehicle, data) triples."""
    doc = orjson.loads(payload)
    out: list[tuple[str, str | None, dict[str, Any]]] = []
    for vid, ts, lon, lat, speed, heading in doc.get("positions", ()):
        out.append(("position", vid, {"vehicle_id": vid, "time": iso_us(ts), "lon": lon,
                                      "lat": lat, "speed_mps": speed, "heading_deg": heading}))
    for eid, tn, ts, status, sub, vid, stop in doc.get("parcels", ()):
        data = {"event_id": eid, "tracking_number": tn, "time": iso_us(ts), "status": status,
                "sub_status": sub, "vehicle_id": vid, "stop_id": stop}  # fmt: skip
        out.append(("parcel", vid, data))
        if status == "Exception":
            out.append(("exception", vid, data))
    return out


class LiveHub:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._epoch = f"{int(time.time()):x}"
        self._n = 0
        self._ring: deque[Message] = deque(maxlen=RING)
        self._clients: set[Client] = set()
        self.connected = False
        self.dropped_clients = 0
        # counts notifications with positions (vehicle_latest moved), and connections
        # (changes while not listening went unseen): what the fleet snapshot checks
        self.positions_version = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self, vehicles: Sequence[str] | None, last_event_id: str | None
                  ) -> tuple[Client, list[Message] | None]:  # fmt: skip
        """A new client, and what it missed since ``last_event_id`` (None: it cannot
        resume from there, so it should start from a snapshot)."""
        client = Client(frozenset(vehicles) if vehicles else None)
        self._clients.add(client)
        missed: list[Message] | None = None
        if last_event_id:
            epoch, _, n = last_event_id.partition("-")
            if epoch == self._epoch and n.isdigit() and self._ring:
                first = int(self._ring[0].id.partition("-")[2])
                if int(n) >= first - 1:
                    missed = [m for m in self._ring if int(m.id.partition("-")[2]) > int(n)
                              and client.wants(m)]  # fmt: skip
        return client, missed

    def unsubscribe(self, client: Client) -> None:
        self._clients.discard(client)

    def publish(self, event: str, vehicle_id: str | None, data: dict[str, Any]) -> None:
        self._n += 1
        m = Message(f"{self._epoch}-{self._n}", event, vehicle_id, orjson.dumps(data))
        self._ring.append(m)
        for c in list(self._clients):
            if not c.wants(m):
                continue
            try:
                c.queue.put_nowait(m)
            except asyncio.QueueFull:  # too slow: let it go (it reconnects and resumes)
                self._clients.discard(c)
                self.dropped_clients += 1
                with_room = c.queue
                while not with_room.empty():
                    with_room.get_nowait()
                with_room.put_nowait(None)

    def receive(self, payload: str) -> None:
        """One notification: its messages to the clients, its positions counted."""
        try:
            for event, vid, data in messages(payload):
                if event == "position":
                    self.positions_version += 1
                self.publish(event, vid, data)
        except (ValueError, TypeError) as exc:
            log.warning("live: unreadable notification (%s)", exc)

    async def run(self) -> None:
        """LISTEN, reconnecting with backoff (:func:`milepost.db.listen`); never returns."""

        def up() -> None:
            self.connected = True
            self.positions_version += 1
            log.info("live: listening on %s", CHANNEL)

        def down(exc: Exception) -> None:
            if self.connected:
                log.warning("live: lost the database (%s); reconnecting", exc)
            self.connected = False

        await listen(self._url, CHANNEL, on_notify=lambda _channel, payload: self.receive(payload),
                     on_up=up, on_down=down)  # fmt: skip
