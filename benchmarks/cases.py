"""Benchmark cases. Each returns medians of a baseline and of milepost, and their ratio."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg_pool import AsyncConnectionPool

from devices.records import GPS_FIX_DTYPE
from ingest.batch import FixFrame
from ingest.mqtt import BrokerAddress
from ingest.service import Ingest
from ingest.stages import EARLIEST_US, MAX_AHEAD_US, validate
from ingest.writer import GPS_COLUMNS, Writer, gps_copy_payload
from milepost import stack
from milepost.db import migrate
from milepost.settings import load_settings

STATE_DIR = Path(__file__).resolve().parents[1] / "var"
ADMIN_URL = "postgresql://milepost@127.0.0.1:55432/postgres"


@dataclass
class BenchDb:
    url: str
    name: str

    @classmethod
    def create(cls) -> BenchDb:
        name = f"milepost_bench_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql://milepost@127.0.0.1:55432/{name}"
        migrate(url)
        return cls(url, name)

    def drop(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def truncate(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE gps_fix, vehicle_latest, dead_letter")
            conn.execute("VACUUM ANALYZE gps_fix")


def synthetic_frame(rows: int, vehicles: int = 1000, seed: int = 1) -> FixFrame:
    rng = np.random.default_rng(seed)
    fix = np.zeros(rows, GPS_FIX_DTYPE)
    t0 = 1_790_000_000_000_000
    per = rows // vehicles + 1
    fix["ts_us"] = t0 + (np.arange(rows) // vehicles) * 1_000_000
    fix["lon_deg"] = 13.4 + rng.normal(0, 0.05, rows)
    fix["lat_deg"] = 52.5 + rng.normal(0, 0.05, rows)
    fix["speed_mps"] = rng.uniform(0, 15, rows)
    fix["heading_deg"] = rng.uniform(0, 360, rows)
    fix["acc_m"] = 5.0
    fix["alt_m"] = np.nan
    fix["sats"] = 9
    fix["hdop"] = np.nan
    fix["seq"] = np.arange(rows) // vehicles
    del per
    vehicle = (np.arange(rows) % vehicles).astype(np.int32)
    received = fix["ts_us"] + 500_000
    return FixFrame(fix, vehicle, received, [f"VAN-{i:05d}" for i in range(vehicles)])


def _result(baseline: str, subject: str, base: list[float], subj: list[float], unit: str,
            meaning: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    b, s = statistics.median(base), statistics.median(subj)
    return {"baseline": baseline, "subject": subject, "unit": unit, "baseline_runs": base,
            "subject_runs": subj, "baseline_median": b, "subject_median": s, "ratio": s / b,
            "meaning": meaning, **extra}  # fmt: skip


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- writer vs raw COPY


def writer_vs_raw_copy(db: BenchDb, rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    """milepost's whole flush (encode, COPY, vehicle_latest upsert, commit) against a raw
    binary COPY of the same, already encoded rows into the same table."""
    frame = synthetic_frame(rows)
    payload = gps_copy_payload(frame)
    cols = ", ".join(GPS_COLUMNS)

    def raw() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(payload)

    async def flush() -> None:
        async with AsyncConnectionPool(db.url, min_size=1, max_size=1) as pool:
            await Writer(pool).flush(frame, [])

    base, subj = [], []
    for _ in range(rounds):
        db.truncate()
        base.append(_timed(raw))
        db.truncate()
        subj.append(_timed(lambda: asyncio.run(flush())))
    return _result("raw binary COPY of pre-encoded rows", "Writer.flush", base, subj, "s",
                   "milepost time / raw COPY time; 1.0 = no overhead", rows=rows)  # fmt: skip


def encoder_vs_psycopg_rows(db: BenchDb, rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    """Encode + COPY with the NumPy encoder against psycopg's binary COPY ``write_row`` loop."""
    frame = synthetic_frame(rows)
    cols = ", ".join(GPS_COLUMNS)
    f = frame.fix

    def opt(x: float) -> float | None:
        return None if math.isnan(x) else x

    from ingest.writer import us_to_datetime

    tuples = [
        (us_to_datetime(int(f["ts_us"][i])), frame.vehicles[int(frame.vehicle[i])],
         float(f["lon_deg"][i]), float(f["lat_deg"][i]), opt(float(f["speed_mps"][i])),
         opt(float(f["heading_deg"][i])), opt(float(f["acc_m"][i])), None, int(f["sats"][i]),
         None, int(f["seq"][i]), us_to_datetime(int(frame.received_us[i])))
        for i in range(rows)
    ]  # fmt: skip

    def rowwise() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["timestamptz", "text", "float8", "float8", "float8", "float8",
                          "float8", "float8", "int2", "float8", "int8", "timestamptz"])
            for t in tuples:
                cp.write_row(t)

    def numpy_encoded() -> None:
        with psycopg.connect(db.url) as conn, conn.cursor() as cur, cur.copy(
            f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(gps_copy_payload(frame))

    base, subj = [], []
    for _ in range(rounds):
        db.truncate()
        base.append(_timed(rowwise))
        db.truncate()
        subj.append(_timed(numpy_encoded))
    return _result("psycopg binary COPY, write_row per row", "NumPy encoder + COPY", base,
                   subj, "s", "milepost time / row-wise time; below 1.0 is faster",
                   rows=rows)  # fmt: skip


# ---------------------------------------------------------------- validate vs Python loop


def validate_vs_python(rows: int, rounds: int, **_: Any) -> dict[str, Any]:
    frame = synthetic_frame(rows)  # all valid: both sides do the same checks, no rejects
    recs = frame.fix.tolist()
    names = frame.fix.dtype.names or ()
    li, ti, si, hi = (names.index(n) for n in ("lat_deg", "ts_us", "speed_mps", "heading_deg"))
    oi = names.index("lon_deg")
    received = frame.received_us.tolist()

    def loop() -> int:
        kept = 0
        for r, rec in zip(recs, received, strict=True):
            lat, lon, ts, sp, hd = r[li], r[oi], r[ti], r[si], r[hi]
            if not (math.isfinite(lat) and math.isfinite(lon)):
                continue
            if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
                continue
            if ts < EARLIEST_US or ts > rec + MAX_AHEAD_US or sp < 0 or math.isinf(sp):
                continue
            if hd < 0 or hd > 360:
                continue
            kept += 1
        return kept

    assert loop() == len(validate(frame).frame)
    base = [_timed(loop) for _ in range(rounds)]
    subj = [_timed(lambda: validate(frame)) for _ in range(rounds)]
    return _result("plain-Python loop", "stages.validate (NumPy)", base, subj, "s",
                   "milepost time / loop time; below 1.0 is faster", rows=rows)  # fmt: skip


# ---------------------------------------------------------------- ingest vs bare subscriber


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    return props


async def _open_session(host: str, port: int, user: str, pw: str, client_id: str) -> None:
    async with aiomqtt.Client(host, port, username=user, password=pw, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                              properties=_session_props()) as c:  # fmt: skip
        await c.subscribe("fleet/+/gps", qos=1)


async def _publish(host: str, port: int, vans: dict[str, str], messages: int) -> None:
    per_van = messages // len(vans)
    t0 = 1_790_000_000

    async def one(vid: str, pw: str) -> None:
        async with aiomqtt.Client(host, port, username=vid, password=pw,
                                  max_inflight_messages=200) as c:  # fmt: skip
            c.pending_calls_threshold = 10**6  # we keep 200 in flight on purpose
            for start in range(0, per_van, 200):
                await asyncio.gather(*(
                    c.publish(f"fleet/{vid}/gps", orjson.dumps(
                        {"ts": t0 + k, "lat": 52.5 + k * 1e-6, "lon": 13.4, "speed": 5.0}), qos=1)
                    for k in range(start, min(per_van, start + 200))))  # fmt: skip

    await asyncio.gather(*(one(v, p) for v, p in vans.items()))


async def _bare_drain(host: str, port: int, user: str, pw: str, client_id: str,
                      messages: int) -> float:  # fmt: skip
    n = 0
    t0 = time.perf_counter()
    async with aiomqtt.Client(host, port, username=user, password=pw, identifier=client_id,
                              protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                              properties=_session_props()) as c:  # fmt: skip
        async for m in c.messages:
            orjson.loads(m.payload)  # type: ignore[arg-type]
            n += 1
            if n >= messages:
                break
    return time.perf_counter() - t0


async def _ingest_drain(db: BenchDb, client_id: str, creds: tuple[str, str],
                        messages: int) -> float:  # fmt: skip
    settings = load_settings({}, database_url=db.url, mqtt_client_id=client_id,
                             state_dir=STATE_DIR, stats_interval_s=3600.0)  # fmt: skip
    broker = BrokerAddress.from_url(settings.mqtt_url, creds)
    t0 = time.perf_counter()
    async with AsyncConnectionPool(db.url, min_size=1, max_size=2) as pool:
        ing = Ingest(settings, pool, broker)
        task = asyncio.create_task(ing.run(), name="bench-ingest")
        while ing.stats.stored + ing.stats.duplicates < messages:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
            await task
    return elapsed


def ingest_vs_bare_subscriber(db: BenchDb, messages: int, rounds: int, **_: Any
                              ) -> dict[str, Any]:  # fmt: skip
    """Drain M queued one-fix messages: milepost ingest (decode, batch, validate, COPY,
    commit, ack) against a bare aiomqtt subscriber that only parses the JSON."""
    host, port = stack.HOST, stack.MQTT_PORT
    user, pw = stack.ingest_credentials(STATE_DIR)
    vans = {}
    for i in range(10):
        vid = f"BENCH-{i:02d}"
        vans[vid] = f"bench-{i}-{secrets.token_hex(4)}"
        stack.add_broker_user(STATE_DIR, vid, vans[vid])
    time.sleep(0.5)  # the broker reloads its password file on SIGHUP
    messages -= messages % len(vans)
    base, subj = [], []
    for r in range(rounds):
        db.truncate()
        bare_id = f"bench-bare-{r}-{secrets.token_hex(3)}"
        ingest_id = f"bench-ing-{r}-{secrets.token_hex(3)}"

        async def prepare(bare_id: str = bare_id, ingest_id: str = ingest_id) -> None:
            await _open_session(host, port, user, pw, bare_id)
            await _open_session(host, port, user, pw, ingest_id)
            await _publish(host, port, vans, messages)

        asyncio.run(prepare())
        base.append(asyncio.run(_bare_drain(host, port, user, pw, bare_id, messages)))
        subj.append(asyncio.run(_ingest_drain(db, ingest_id, (user, pw), messages)))
    return _result("bare aiomqtt subscriber (parse only)", "milepost ingest to the database",
                   base, subj, "s", "milepost time / bare subscriber time; 1.0 = keeps pace",
                   messages=messages,
                   subject_msgs_per_s=messages / statistics.median(subj),
                   baseline_msgs_per_s=messages / statistics.median(base))  # fmt: skip


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "writer_vs_raw_copy": writer_vs_raw_copy,
    "encoder_vs_psycopg_rows": encoder_vs_psycopg_rows,
    "validate_vs_python": validate_vs_python,
    "ingest_vs_bare_subscriber": ingest_vs_bare_subscriber,
}
