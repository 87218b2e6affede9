"""Serial RFID gate readers: one thread per gate, frames -> decoder -> batch.

A :class:`GateReader` thread opens its gate's pyserial URL (``/dev/ttyUSB0``,
``socket://``, ``rfc2217://``, ``loop://``), drives the reader as its protocol needs
(Mercury: start continuous reading; Chafon: poll with an inventory command every cycle;
ASCII: just listen), frames and decodes what arrives, stamps each read with the host's
receipt time (event time of a serial read; the readers send no absolute time), and
hands reads and dead letters to the event loop in chunks of at most ``CHUNK_S``.
Handing over blocks while ingest's batch queue is full: back-pressure reaches the
serial line, whose reader-side buffer holds the rest.

An unplugged or closed port, or a path re-pointed to a new device, is retried with
backoff and logged once per outage. :class:`GateSupervisor` reads the ``gate`` table
when woken (a stored manifest's notification) and every ``RELOAD_S`` seconds, and starts,
restarts or stops readers as the manifest changes, without a restart of ``milepost
ingest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import psycopg
import serial
from psycopg_pool import AsyncConnectionPool

from devices.errors import DecodeError
from devices.records import TAG_READ_DTYPE, ReaderStatus, TagRead
from devices.rfid import PROTOCOLS, chafon, mercury
from ingest.batch import DeadLetter

log = logging.getLogger(__name__)

CHUNK_S = 0.05
READ_TIMEOUT_S = 0.05
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
POLL_SCAN_100MS = 2  # UHFReader288 scan time per inventory: 200 ms
POLL_TIMEOUT_S = 3.0  # a polled reader that has not finished its inventory by then is polled again
SILENT_RESTART_S = 5.0  # a streaming Mercury that sends nothing (not even keep-alives) is restarted
RELOAD_S = 2.0


@dataclass(frozen=True, slots=True)
class GateConfig:
    gate_id: str
    url: str
    protocol: str
    baud: int
    antennas: dict[int, str] = field(default_factory=dict)  # antenna -> "hall" | "dock"


@dataclass(slots=True)
class GateChunk:
    """What one gate read in one chunk: reads as columns, plus dead letters and health."""

    gate_id: str
    epcs: list[str]
    reads: Any  # NDArray of TAG_READ_DTYPE
    dead: list[DeadLetter]
    health: list[ReaderStatus]


Sink = Callable[[GateChunk], Coroutine[Any, Any, None]]


def now_us() -> int:
    return time.time_ns() // 1000


class _Collector:
    """Accumulates one chunk in the reader thread."""

    def __init__(self, gate_id: str) -> None:
        self.gate_id = gate_id
        self.source = f"gate:{gate_id}"
        self.reset()

    def reset(self) -> None:
        self.epcs: list[str] = []
        self.rows: list[tuple[int, int, float, int]] = []
        self.dead: list[DeadLetter] = []
        self.health: list[ReaderStatus] = []
        self.started = time.monotonic()

    def records(self, records: list[TagRead | ReaderStatus], received: int) -> int:
        """Take a frame's records; returns how many were tag reads."""
        n = 0
        for rec in records:
            if isinstance(rec, TagRead):
                self.epcs.append(rec.epc_hex)
                self.rows.append((received, rec.antenna, rec.rssi, rec.read_count))
                n += 1
            elif rec.kind == "health":
                self.health.append(rec)
        return n

    def garbage(self, chunks: list[bytes], received: int, why: str) -> None:
        for chunk in chunks:
            self.dead.append(DeadLetter(received, self.source, chunk, why))

    def chunk(self) -> GateChunk:
        reads = np.array(self.rows, dtype=TAG_READ_DTYPE) if self.rows else np.empty(
            0, TAG_READ_DTYPE)  # fmt: skip
        out = GateChunk(self.gate_id, self.epcs, reads, self.dead, self.health)
        self.reset()
        return out

    def __bool__(self) -> bool:
        return bool(self.rows or self.dead or self.health)


class GateReader(threading.Thread):
    """One gate's reader thread; ``stop()`` ends it within about a read timeout."""

    def __init__(self, gate: GateConfig, sink: Sink, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name=f"gate-{gate.gate_id}", daemon=True)
        if gate.protocol not in PROTOCOLS:
            raise ValueError(f"gate {gate.gate_id}: unknown protocol {gate.protocol!r}")
        self.gate = gate
        self._sink = sink
        self._loop = loop
        self._stop_event = threading.Event()
        self.connected = False
        # receipt time up to which everything this gate sent has been handed to ingest:
        # passes may be closed by the clock only up to here (a stalled reader holds it back)
        self.delivered_us = now_us()
        self.reads = 0
        self.frames = 0
        self.rejected = 0

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        delay = BACKOFF_MIN_S
        down_since: float | None = None
        while not self._stop_event.is_set():
            try:
                port = serial.serial_for_url(self.gate.url, baudrate=self.gate.baud,
                                             timeout=READ_TIMEOUT_S)  # fmt: skip
            except (serial.SerialException, OSError, ValueError) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("gate %s: cannot open %s (%s); retrying with backoff",
                                self.gate.gate_id, self.gate.url, exc)  # fmt: skip
                self._stop_event.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if down_since is not None:
                log.info("gate %s: %s open again after %.1f s", self.gate.gate_id,
                         self.gate.url, time.monotonic() - down_since)  # fmt: skip
            else:
                log.info("gate %s: reading %s (%s)", self.gate.gate_id, self.gate.url,
                         self.gate.protocol)  # fmt: skip
            down_since, delay = None, BACKOFF_MIN_S
            self.connected = True
            try:
                self._drive(port)
            except (serial.SerialException, OSError) as exc:
                down_since = time.monotonic()
                log.warning("gate %s: %s lost (%s); reopening with backoff",
                            self.gate.gate_id, self.gate.url, exc)  # fmt: skip
            finally:
                self.connected = False
                with contextlib.suppress(serial.SerialException, OSError):
                    port.close()

    def _deliver(self, collector: _Collector) -> None:
        if collector:
            chunk = collector.chunk()
            future = asyncio.run_coroutine_threadsafe(self._sink(chunk), self._loop)
            future.result()  # blocks while ingest is behind: back-pressure
            self.delivered_us = now_us()
        else:
            collector.started = time.monotonic()

    def _drive(self, port: serial.SerialBase) -> None:
        proto = PROTOCOLS[self.gate.protocol]
        framer = proto.framer()
        collector = _Collector(self.gate.gate_id)
        polled = self.gate.protocol in ("chafon18", "chafon288")
        # a UHFReader288 inventories one antenna per command: take the gate's antennas in
        # turn, so both the hall and the dock side are seen and a pass gets its direction
        polls = ([chafon.cmd_inventory18()] if self.gate.protocol == "chafon18" else
                 [chafon.cmd_inventory288(antenna=a, scan_time_100ms=POLL_SCAN_100MS)
                  for a in sorted(self.gate.antennas) or [1]])  # fmt: skip
        poll_no = 0
        if self.gate.protocol == "mercury":
            port.write(mercury.cmd_stop_continuous() + mercury.cmd_start_continuous())
        last_data = time.monotonic()
        silent = False
        poll_due = 0.0
        while not self._stop_event.is_set():
            now = time.monotonic()
            if polled and now >= poll_due:
                port.write(polls[poll_no % len(polls)])
                poll_no += 1
                poll_due = now + POLL_TIMEOUT_S
            data = port.read(max(1, port.in_waiting))
            received = now_us()
            if not collector:
                self.delivered_us = received
            if data:
                last_data = time.monotonic()
                silent = False
                frames = framer.feed(data)
            else:
                frames = framer.flush() if framer.pending else []
                if (self.gate.protocol == "mercury"
                        and time.monotonic() - last_data > SILENT_RESTART_S):  # fmt: skip
                    if not silent:
                        log.warning("gate %s: reader silent for %.0f s (not even keep-alives);"
                                    " restarting reading every %.0f s until it answers",
                                    self.gate.gate_id, SILENT_RESTART_S,
                                    SILENT_RESTART_S)  # fmt: skip
                    silent = True
                    port.write(mercury.cmd_stop_continuous() + mercury.cmd_start_continuous())
                    last_data = time.monotonic()
            for frame in frames:
                self.frames += 1
                try:
                    records = proto.decode(frame)
                except DecodeError as exc:
                    self.rejected += 1
                    collector.dead.append(DeadLetter(received, collector.source, frame, str(exc)))
                    continue
                self.reads += collector.records(records, received)
                if polled and _inventory_done(records):
                    poll_due = time.monotonic()  # inventory finished: poll again now
            garbage = framer.drain_garbage()
            if garbage:
                self.rejected += len(garbage)
                why = f"{self.gate.protocol}: bytes outside any valid frame"
                collector.garbage(garbage, received, why)
            if time.monotonic() - collector.started >= CHUNK_S:
                self._deliver(collector)
        self._deliver(collector)


def _inventory_done(records: list[TagRead | ReaderStatus]) -> bool:
    """A polled inventory answer that ends the cycle (anything but "more frames follow")."""
    return any(isinstance(r, ReaderStatus) and r.kind not in ("more", "keepalive")
               for r in records)  # fmt: skip


def gate_from_row(row: tuple[Any, ...]) -> GateConfig:
    gate_id, url, protocol, baud, antennas = row
    if isinstance(antennas, str | bytes):
        antennas = orjson.loads(antennas)
    return GateConfig(gate_id, url, protocol, int(baud),
                      {int(k): str(v) for k, v in (antennas or {}).items()})  # fmt: skip


class GateSupervisor:
    """Keeps one running GateReader per row of the ``gate`` table."""

    def __init__(self, pool: AsyncConnectionPool, sink: Sink) -> None:
        self._pool = pool
        self._sink = sink
        self.readers: dict[str, GateReader] = {}
        self._stopped = False
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """The gate table may have changed: reconcile now, not at the next reload."""
        self._changed.set()

    async def _gates(self) -> dict[str, GateConfig]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT gate_id, url, protocol, baud, antennas FROM gate ORDER BY gate_id")
            return {row[0]: gate_from_row(row) for row in await cur.fetchall()}

    async def reconcile(self) -> None:
        if self._stopped:
            return
        gates = await self._gates()
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        for gate_id, reader in list(self.readers.items()):
            if gates.get(gate_id) != reader.gate:
                reader.stop()
                await asyncio.to_thread(reader.join)
                self.readers.pop(gate_id, None)
                log.info("gate %s: stopped (%s)", gate_id,
                         "changed" if gate_id in gates else "removed")  # fmt: skip
        for gate_id, gate in gates.items():
            if gate_id not in self.readers and not self._stopped:
                reader = GateReader(gate, self._sink, loop)
                reader.start()
                self.readers[gate_id] = reader

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.reconcile()
                except psycopg.OperationalError as exc:  # keep the readers; retry later
                    log.warning("cannot read the gate list (%s); keeping the running readers",
                                exc)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), RELOAD_S)
                self._changed.clear()
        finally:
            await self.stop(2.0)

    async def stop(self, timeout_s: float) -> bool:
        """Stop every reader (each hands over what it read) and start none again; False
        when one has not ended within ``timeout_s`` (it waits to hand over its reads)."""
        self._stopped = True
        readers = list(self.readers.values())
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + timeout_s
        while any(r.is_alive() for r in readers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the loop runs on: a reader's last hand-over needs it
        return not any(r.is_alive() for r in readers)
