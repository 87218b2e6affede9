"""A simulated day played live: each van publishes its fixes, cargo inventories, cargo
space temperatures and proofs of delivery over MQTT under its own broker account, when
their event time comes, while the dock-door readers play the day's carries on
pseudo-terminals (:class:`simulators.gates.GateSim`).

Time: the day is planned so that day second ``from_s`` is the wall clock's now; then day
time runs ``speedup`` times faster than the wall clock. Messages carry day time (event
time). The gate readers cannot stamp their reads (the host stamps them on receipt), so
gates are played only at ``speedup`` 1: at 50x a carry's reads would be stamped with a
moment of the day long past, when another van stood at the dock door, and bind its
parcels to that van (a test saw exactly that). Without gates the vans' cargo readers
bind the parcels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiomqtt
import numpy as np

from devices import fleet
from devices.gps import json as gps_json
from devices.records import US_PER_S, GpsFix
from simulators.day import Day
from simulators.gates import GateSim, PlannedCarry

log = logging.getLogger(__name__)

Message = tuple[float, str, str, bytes]  # day second, vehicle, topic, payload


RETRY_S = 1.0  # a van that lost the broker tries again this often (wall clock)
FLUSH_S = 30.0  # after the day's last message, how long the vans try to deliver the rest


@dataclass(slots=True)
class LiveStats:
    published: int = 0  # messages the broker acknowledged (each counted once)
    failed: int = 0  # messages still undelivered when the day ended
    fixes: int = 0  # fixes in the published messages
    retried: int = 0  # publishes that failed and went back to the van's backlog
    reconnects: int = 0


class VanLink:
    """A van's MQTT connection, as a device keeps one: what it could not deliver (the broker
    gone, the link down) stays in its backlog, in order, and goes first once it is
    connected again; it reconnects every :data:`RETRY_S`."""

    def __init__(self, van: str, host: str, port: int, password: str) -> None:
        self.van, self.host, self.port, self.password = van, host, port, password
        self.client: aiomqtt.Client | None = None
        self.backlog: list[Message] = []
        self.retry_at = 0.0

    async def connect(self) -> None:
        client = aiomqtt.Client(self.host, self.port, username=self.van, password=self.password,
                                identifier=f"sim-{self.van}", timeout=10)  # fmt: skip
        await client.__aenter__()
        self.client = client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def send(self, due: list[Message], stats: LiveStats) -> None:
        self.backlog.extend(due)
        if not self.backlog:
            return
        if self.client is None:
            if time.monotonic() < self.retry_at:
                return
            try:
                await self.connect()
            except aiomqtt.MqttError as exc:
                log.info("%s: cannot reach the broker (%s); %d messages wait", self.van, exc,
                         len(self.backlog))  # fmt: skip
                self.retry_at = time.monotonic() + RETRY_S
                return
            stats.reconnects += 1
        client = self.client
        assert client is not None
        sending, self.backlog = self.backlog, []
        results = await asyncio.gather(
            *(client.publish(topic, payload, qos=1) for _, _, topic, payload in sending),
            return_exceptions=True)  # fmt: skip
        for message, r in zip(sending, results, strict=True):
            if isinstance(r, BaseException):  # again later (the broker may have it: QoS 1)
                self.backlog.append(message)
                stats.retried += 1
            else:
                stats.published += 1
                stats.fixes += message[2].endswith("/gps")
        if self.backlog:
            log.info("%s: lost the broker; %d messages wait", self.van, len(self.backlog))
            await self.close()
            self.retry_at = time.monotonic() + RETRY_S


def schedule(day: Day, from_s: float = 0.0) -> list[Message]:
    """Every van message of the day from ``from_s`` on, in time order."""
    out: list[Message] = []
    s0 = day.start_us

    def t_of(ts_us: int) -> float:
        return (ts_us - s0) / US_PER_S

    for van, arr in day.fixes.items():
        for row in arr[arr["ts_us"] >= s0 + round(from_s * US_PER_S)].tolist():
            ts, lon, lat, speed, heading, acc, alt, sats, hdop, seq = row
            fix = GpsFix(ts, lon, lat, speed, heading, acc, alt, sats, hdop, seq)
            out.append((t_of(ts), van, f"fleet/{van}/gps", gps_json.encode([fix])))
    for van, scan in day.cargo:
        out.append((t_of(scan.ts_us), van, f"fleet/{van}/cargo", fleet.encode_cargo(scan)))
    for van, r in day.sensors:
        out.append((t_of(r.ts_us), van, f"fleet/{van}/sensor", fleet.encode_sensor(r)))
    for van, pod in day.pods:
        out.append((t_of(pod.ts_us), van, f"fleet/{van}/pod", fleet.encode_pod(pod)))
    out = [m for m in out if m[0] >= from_s]
    out.sort(key=lambda m: m[0])
    return out


def carries_from(day: Day, from_s: float, speedup: float) -> list[PlannedCarry]:
    """The day's carries from ``from_s`` on, on the gate simulator's clock (seconds since
    it started, which is day second ``from_s``)."""
    out = []
    for c in day.carries:
        keep = c.t_s >= from_s
        if not keep.any():
            continue
        t = (c.t_s[keep] - from_s) / speedup
        carry = replace(c.carry, t_start_s=float(t[0]), t_end_s=float(t[-1]))
        out.append(PlannedCarry(carry, t, c.antenna[keep], c.rssi_dbm[keep]))
    return out


async def run_day(
    day: Day, *, host: str, port: int, passwords: dict[str, str], from_s: float = 0.0,
    speedup: float = 1.0, duration_s: float | None = None, link_dir: Path | None = None,
    progress: Callable[[str], None] | None = None, flush_s: float = FLUSH_S,
) -> LiveStats:  # fmt: skip
    """Play the day; gates on pseudo-terminals under ``link_dir`` (None: no gates; gates
    need ``speedup`` 1, see the module's docstring). After the day's last message the vans
    go on delivering what they hold for at most ``flush_s``; what is left then is counted
    in ``failed``."""
    if link_dir is not None and speedup != 1:
        raise ValueError(f"gates need speedup 1 (their reads are stamped by the host), not"
                         f" {speedup:g}")  # fmt: skip
    stats = LiveStats()
    messages = schedule(day, from_s)
    vans = sorted({m[1] for m in messages} | set(day.fixes))
    sim = (GateSim(day.gates, 0, link_dir=link_dir, carries=carries_from(day, from_s, speedup))
           if link_dir is not None else None)  # fmt: skip
    links = {van: VanLink(van, host, port, passwords[van]) for van in vans}
    async with contextlib.AsyncExitStack() as stack:
        for link in links.values():
            await link.connect()  # the day starts with every van online
            stack.push_async_callback(link.close)
        if sim is not None:
            stack.enter_context(sim)
        wall0 = time.monotonic()
        if progress:
            progress(f"{len(vans)} vans connected to {host}:{port}; playing the day from"
                     f" {from_s / 60:.1f} min at {speedup}x, {len(messages)} messages")
        k, last_report = 0, wall0
        played_at: float | None = None  # when the day's last message came due
        while k < len(messages) or any(link.backlog for link in links.values()):
            elapsed = time.monotonic() - wall0
            if duration_s is not None and elapsed >= duration_s:
                break
            if played_at is not None and time.monotonic() - played_at > flush_s:
                log.warning("%d messages still undelivered %.0f s after the day's end (is"
                            " the broker up?); giving up on them",
                            sum(len(link.backlog) for link in links.values()), flush_s)
                break
            now_s = from_s + elapsed * speedup
            due: dict[str, list[Message]] = {van: [] for van in vans}
            while k < len(messages) and messages[k][0] <= now_s:
                due[messages[k][1]].append(messages[k])
                k += 1
            await asyncio.gather(*(links[van].send(due[van], stats) for van in vans))
            now = time.monotonic()
            if progress and now - last_report >= 10:
                progress(f"day minute {now_s / 60:.1f}: published {stats.published} messages"
                         f" ({stats.fixes} fixes, {stats.retried} retried)")  # fmt: skip
                last_report = now
            if k < len(messages):
                wait = (messages[k][0] - now_s) / speedup
                await asyncio.sleep(float(np.clip(wait, 0.0, 0.5)))
            else:  # the day is played: what the vans still hold, until flush_s
                played_at = played_at if played_at is not None else time.monotonic()
                await asyncio.sleep(RETRY_S / 4)
    stats.failed = sum(len(link.backlog) for link in links.values())
    if progress:
        progress(f"the day is over: published {stats.published} messages, {stats.failed}"
                 f" undelivered ({stats.retried} publishes retried, {stats.reconnects}"
                 " reconnects)")
    return stats
