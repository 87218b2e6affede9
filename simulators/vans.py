"""Simulated vans publishing GPS fixes over MQTT, each under its own broker account."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from devices.gps import json as gps_json
from devices.records import US_PER_S, GpsFix
from simulators.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(slots=True)
class VanStats:
    published: int = 0
    failed: int = 0


async def run_vans(
    scenario: Scenario,
    *,
    host: str,
    port: int,
    passwords: dict[str, str],
    rate_hz: float,
    speedup: float = 1.0,
    duration_s: float | None = None,
    start_us: int | None = None,
    warmup_s: float = 900.0,
    progress: Callable[[str], None] | None = None,
) -> VanStats:
    """Publish every van's fix ``rate_hz`` times per wall-clock second until ``duration_s``.

    Scenario time runs ``speedup`` times faster than the wall clock; fixes carry scenario
    time (event time), starting at ``start_us`` (default: now). The vans start ``warmup_s``
    into their day, so they are already out on their tours rather than loading at the hub.
    With ``speedup`` above 1 and no ``start_us``, fix times run ahead of the wall clock.
    """
    stats = VanStats()
    wall0 = time.monotonic()
    t0_us = time.time_ns() // 1000 if start_us is None else start_us
    ids = scenario.vehicle_ids
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for vid in ids:
            client = aiomqtt.Client(host, port, username=vid, password=passwords[vid],
                                    identifier=f"sim-{vid}", timeout=10)  # fmt: skip
            clients.append(await stack.enter_async_context(client))
        if progress:
            progress(f"{len(ids)} vans connected to {host}:{port}, publishing at {rate_hz} Hz"
                     f" each, {speedup}x speed")  # fmt: skip
        tick = 0
        last_report = wall0
        while duration_s is None or time.monotonic() - wall0 < duration_s:
            t_s = (time.monotonic() - wall0) * speedup
            sample = scenario.observe(warmup_s + t_s)
            ts_us = t0_us + round(t_s * US_PER_S)
            sends = []
            for i, (vid, client) in enumerate(zip(ids, clients, strict=True)):
                fix = GpsFix(ts_us, float(sample.lon_deg[i]), float(sample.lat_deg[i]),
                             float(sample.speed_mps[i]), float(sample.heading_deg[i]),
                             acc_m=5.0, seq=tick)  # fmt: skip
                sends.append(client.publish(f"fleet/{vid}/gps", gps_json.encode([fix]), qos=1))
            results = await asyncio.gather(*sends, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    stats.failed += 1
                else:
                    stats.published += 1
            tick += 1
            now = time.monotonic()
            if progress and now - last_report >= 10:
                progress(f"published {stats.published} fixes ({stats.failed} failed)")
                last_report = now
            next_tick = wall0 + tick / rate_hz
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    return stats
