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


@dataclass(slots=True)
class LiveStats:
    published: int = 0
    failed: int = 0
    fixes: int = 0


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
    progress: Callable[[str], None] | None = None,
) -> LiveStats:  # fmt: skip
    """Play the day; gates on pseudo-terminals under ``link_dir`` (None: no gates; gates
    need ``speedup`` 1, see the module's docstring)."""
    if link_dir is not None and speedup != 1:
        raise ValueError(f"gates need speedup 1 (their reads are stamped by the host), not"
                         f" {speedup:g}")  # fmt: skip
    stats = LiveStats()
    messages = schedule(day, from_s)
    vans = sorted({m[1] for m in messages} | set(day.fixes))
    sim = (GateSim(day.gates, 0, link_dir=link_dir, carries=carries_from(day, from_s, speedup))
           if link_dir is not None else None)  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, aiomqtt.Client] = {}
        for van in vans:
            client = aiomqtt.Client(host, port, username=van, password=passwords[van],
                                    identifier=f"sim-{van}", timeout=10)  # fmt: skip
            clients[van] = await stack.enter_async_context(client)
        if sim is not None:
            stack.enter_context(sim)
        wall0 = time.monotonic()
        if progress:
            progress(f"{len(vans)} vans connected to {host}:{port}; playing the day from"
                     f" {from_s / 60:.1f} min at {speedup}x, {len(messages)} messages")
        k, last_report = 0, wall0
        while k < len(messages):
            elapsed = time.monotonic() - wall0
            if duration_s is not None and elapsed >= duration_s:
                break
            now_s = from_s + elapsed * speedup
            due = []
            while k < len(messages) and messages[k][0] <= now_s:
                due.append(messages[k])
                k += 1
            results = await asyncio.gather(
                *(clients[van].publish(topic, payload, qos=1) for _, van, topic, payload in due),
                return_exceptions=True)  # fmt: skip
            for (_, _, topic, _), r in zip(due, results, strict=True):
                if isinstance(r, BaseException):
                    stats.failed += 1
                else:
                    stats.published += 1
                    stats.fixes += topic.endswith("/gps")
            now = time.monotonic()
            if progress and now - last_report >= 10:
                progress(f"day minute {now_s / 60:.1f}: published {stats.published} messages"
                         f" ({stats.fixes} fixes, {stats.failed} failed)")  # fmt: skip
                last_report = now
            if k < len(messages):
                wait = (messages[k][0] - now_s) / speedup
                await asyncio.sleep(float(np.clip(wait, 0.0, 0.5)))
    if progress:
        progress(f"the day is over: published {stats.published} messages, {stats.failed} failed")
    return stats
