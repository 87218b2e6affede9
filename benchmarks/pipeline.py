"""Issue 3, item 5: milepost ingest against its ceilings and a naive pipeline, in one run.

Everything runs on this machine against 127.0.0.1: a fresh database (BenchDb) and a
private broker (benchmarks.broker) per run, fresh client ids per phase, and one seeded
set of fixes that every phase draws from, so the figures are comparable:

* database ceiling: one raw binary COPY of the 50-fix phase's fixes into ``gps_fix``;
* client ceiling: a bare aiomqtt subscriber (the library and MQTT 3.1.1, as ingest) that
  only counts QoS 1 messages, draining a backlog queued in its persistent session; the
  same over MQTT 5 and a bare paho subscriber, for reference;
* naive: one INSERT per message in autocommit mode (a commit per message), database side
  only, so it is an upper bound for any naive pipeline;
* milepost: ``ingest.service.Ingest`` in this process, draining a backlog of one-fix and
  of 50-fix messages from its persistent session; done = every fix committed, seen by a
  separate database session;
* latency: ingest runs here while a child process publishes one-fix (then 50-fix)
  messages at half the sustained rate, round robin over the vehicles, from payloads
  encoded beforehand, through one ``mosquitto_pub -l`` (C) per vehicle (a paho publisher
  in Python cannot pace 8,000 messages/s on these 2 cores beside ingest, and then
  measures its own queue), recording when it writes each; it polls ``gps_fix`` every
  ~10 ms for each vehicle's newest committed fix. A message's latency is the end of the
  first poll that shows it minus the start of its publish call: broker, ingest's batch
  wait, COPY and commit, plus at most one poll interval (so an upper bound).

* live: what the machine sustains with the publishers, the broker's receiving and
  sending, ingest and PostgreSQL sharing its cores (a drain only has the broker
  sending): the highest rate at which the latency probe's messages are all committed
  within 1 s, found from an eighth of the drain rate by doubling, then three bisections,
  with 1 + 4 s trials. The latency phase runs at half of this live rate. At half the
  drain rate these 2 cores are past their capacity once they publish as well, and a
  latency that grows with a backlog for as long as the run lasts is not a figure.

Rates are "sustained": messages or fixes between 10 % and 90 % of a drain, divided by
the time between, so connect time and the last partial batch do not count for either
side; whole-drain rates are kept in the JSON too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, Final

import aiomqtt
import numpy as np
import psycopg
from numpy.typing import NDArray
from psycopg_pool import AsyncConnectionPool

from benchmarks import broker as mq
from benchmarks.cases import STATE_DIR, BenchDb, synthetic_frame
from devices.gps import json as gps_json
from devices.records import GPS_FIX_DTYPE, GpsFix
from ingest.batch import FixFrame
from ingest.mqtt import BrokerAddress
from ingest.service import Ingest
from ingest.writer import GPS_COLUMNS, gps_copy_payload, us_to_datetime
from milepost.settings import load_settings

VEHICLES = 10
POLL_S = 0.01  # how often the latency probe (its own process) asks what is committed
DRAIN_POLL_S = 0.025  # the drain watcher shares ingest's event loop: ask less often

# newest committed fix per vehicle (the unique index on (vehicle_id, time, ...) answers it)
_NEWEST = """
SELECT v, (SELECT (extract(epoch FROM max(f.time)) * 1000000)::int8
           FROM gps_fix f WHERE f.vehicle_id = v AND f.time >= %s)
FROM unnest(%s::text[]) AS v
"""


class BenchError(RuntimeError):
    """A phase did not complete, or the database does not hold what was published."""


@dataclass(frozen=True, slots=True)
class Params:
    single_messages: int = 20_000
    batched_messages: int = 2_000
    fixes_per_message: int = 50
    naive_messages: int = 10_000
    rounds: int = 5
    latency_s: float = 10.0
    warmup_s: float = 2.0


# ---------------------------------------------------------------- the rows


@dataclass(frozen=True, slots=True)
class Expect:
    """What a phase publishes: per vehicle, the fix times in publish order."""

    ts_us: dict[str, NDArray[np.int64]]
    since: datetime  # no fix is older: bounds the watcher's index scans

    @property
    def vehicles(self) -> list[str]:
        return list(self.ts_us)

    @property
    def total(self) -> int:
        return sum(len(a) for a in self.ts_us.values())

    def committed(self, newest: dict[str, int | None]) -> int:
        """Fixes committed, given each vehicle's newest committed fix time. Each vehicle's
        messages come over one connection in order and ingest commits in receipt order,
        so everything up to the newest is in; the final count checks that."""
        done = 0
        for v, a in self.ts_us.items():
            t = newest.get(v)
            if t is not None:
                done += int(np.searchsorted(a, np.int64(t), side="right"))
        return done


@dataclass(frozen=True, slots=True)
class Workload:
    frame: FixFrame  # every fix, vehicle i % VEHICLES, 1 s apart per vehicle
    single: dict[str, list[bytes]]  # vehicle -> one-fix payloads, in time order
    batched: dict[str, list[bytes]]  # vehicle -> 50-fix payloads, in time order
    single_expect: Expect
    batched_expect: Expect
    batched_rows: int


def build_workload(p: Params) -> Workload:
    if min(p.single_messages, p.batched_messages, p.naive_messages) < VEHICLES:
        raise ValueError(f"every message count must be at least {VEHICLES} (one per vehicle)")
    per = p.fixes_per_message
    single_n = p.single_messages - p.single_messages % VEHICLES
    batched_rows = (p.batched_messages - p.batched_messages % VEHICLES) * per
    total = max(single_n, batched_rows, p.naive_messages)
    frame = synthetic_frame(total + (-total) % VEHICLES, vehicles=VEHICLES)
    # fix times from two days ago on, so validation (<= 25 h ahead) never rejects them
    shift = time.time_ns() // 1000 - 2 * 86_400 * 1_000_000 - int(frame.fix["ts_us"].min())
    frame.fix["ts_us"] += shift
    frame.received_us += shift
    since = us_to_datetime(int(frame.fix["ts_us"].min()))
    names = GPS_FIX_DTYPE.names or ()
    single: dict[str, list[bytes]] = {}
    batched: dict[str, list[bytes]] = {}
    s_ts: dict[str, NDArray[np.int64]] = {}
    b_ts: dict[str, NDArray[np.int64]] = {}
    for code, vid in enumerate(frame.vehicles):
        rows = np.flatnonzero(frame.vehicle == code)  # already in time order
        mine = frame.fix[rows[rows < max(single_n, batched_rows)]].tolist()
        fixes = [GpsFix(**dict(zip(names, r, strict=True))) for r in mine]
        mine_single = rows[rows < single_n]
        single[vid] = [gps_json.encode([f]) for f in fixes[: len(mine_single)]]
        s_ts[vid] = frame.fix["ts_us"][mine_single].astype(np.int64)
        mine_batched = rows[rows < batched_rows]
        batched[vid] = [gps_json.encode(fixes[i : i + per])
                        for i in range(0, len(mine_batched), per)]  # fmt: skip
        b_ts[vid] = frame.fix["ts_us"][mine_batched].astype(np.int64)
    return Workload(frame, single, batched, Expect(s_ts, since), Expect(b_ts, since),
                    batched_rows)  # fmt: skip


# ---------------------------------------------------------------- rates


def rates(progress: mq.Progress, total: int) -> tuple[float, float]:
    """(sustained, whole): per second between 10 % and 90 % of ``total``, and overall."""

    def first(at_least: float) -> tuple[float, int]:
        for t, n in progress:
            if n >= at_least:
                return t, n
        raise BenchError(f"progress never reached {at_least:.0f} of {total}")

    t_end, _ = first(total)
    whole = total / (t_end - progress[0][0])
    t10, n10 = first(0.1 * total)
    t90, n90 = first(0.9 * total)
    sustained = (n90 - n10) / (t90 - t10) if t90 > t10 and n90 > n10 else whole
    return sustained, whole


# ---------------------------------------------------------------- database-only phases


def copy_ceiling(db: BenchDb, payload: bytes, rows: int) -> float:
    """Rows/s of one binary COPY of pre-encoded rows, committed (connect not counted)."""
    cols = ", ".join(GPS_COLUMNS)
    with psycopg.connect(db.url) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY gps_fix ({cols}) FROM STDIN (FORMAT BINARY)"
                                             ) as cp:  # fmt: skip
            cp.write(payload)
        conn.commit()
        return rows / (time.perf_counter() - t0)


def naive_rows(frame: FixFrame, n: int) -> list[tuple[object, ...]]:
    f = frame.fix

    def opt(x: float) -> float | None:
        return None if math.isnan(x) else x

    return [
        (us_to_datetime(int(f["ts_us"][i])), frame.vehicles[int(frame.vehicle[i])],
         float(f["lon_deg"][i]), float(f["lat_deg"][i]), opt(float(f["speed_mps"][i])),
         opt(float(f["heading_deg"][i])), opt(float(f["acc_m"][i])), None, int(f["sats"][i]),
         None, int(f["seq"][i]), us_to_datetime(int(frame.received_us[i])), None)
        for i in range(n)
    ]  # fmt: skip


def naive_inserts(db: BenchDb, rows: Sequence[tuple[object, ...]]) -> float:
    """Rows/s of one INSERT per message, each its own transaction (autocommit); psycopg
    prepares the statement after a few executions, so this is the fastest naive writer."""
    query = (f"INSERT INTO gps_fix ({', '.join(GPS_COLUMNS)})"
             f" VALUES ({', '.join(['%s'] * len(GPS_COLUMNS))})")  # fmt: skip
    with psycopg.connect(db.url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for r in rows:
            conn.execute(query, r)
        return len(rows) / (time.perf_counter() - t0)


# ---------------------------------------------------------------- MQTT drains


async def aiomqtt_drain(broker: mq.BenchBroker, client_id: str, messages: int,
                        timeout_s: float, *, mqtt5: bool = True) -> mq.Progress:  # fmt: skip
    """A bare aiomqtt subscriber that only counts QoS 1 messages (acknowledged by the
    library as they arrive), resuming the session its backlog is queued in: MQTT 5 with
    ingest's session settings, or MQTT 3.1.1 (clean session off) for reference."""
    step = max(1, messages // 100)
    progress: mq.Progress = [(time.perf_counter(), 0)]
    n = 0
    user, password = broker.ingest
    if mqtt5:
        client = aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                                identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5,
                                clean_start=False, properties=mq.connect_props())  # fmt: skip
    else:
        client = aiomqtt.Client(broker.host, broker.port, username=user, password=password,
                                identifier=client_id, protocol=aiomqtt.ProtocolVersion.V311,
                                clean_session=False)  # fmt: skip
    async with asyncio.timeout(timeout_s), client:
        async for _ in client.messages:
            n += 1
            if n % step == 0 or n == messages:
                progress.append((time.perf_counter(), n))
                if n >= messages:
                    break
    return progress


async def _newest(conn: psycopg.AsyncConnection[Any], expect: Expect) -> dict[str, int | None]:
    cur = await conn.execute(_NEWEST, (expect.since, expect.vehicles))
    return {str(v): (None if t is None else int(t)) for v, t in await cur.fetchall()}


async def _count(conn: psycopg.AsyncConnection[Any], expect: Expect) -> int:
    cur = await conn.execute("SELECT count(*) FROM gps_fix WHERE time >= %s", (expect.since,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@contextlib.asynccontextmanager
async def _running_ingest(db: BenchDb, broker: mq.BenchBroker, client_id: str
                          ) -> AsyncIterator[tuple[asyncio.Task[None], float]]:  # fmt: skip
    """milepost ingest with production settings, on its own pool, until the block ends;
    yields its task and the perf_counter time it was started."""
    settings = load_settings({}, database_url=db.url, mqtt_url=broker.url,
                             mqtt_client_id=client_id, state_dir=STATE_DIR,
                             stats_interval_s=3600.0)  # fmt: skip
    address = BrokerAddress.from_url(settings.mqtt_url, broker.ingest)
    pool = AsyncConnectionPool(db.url, min_size=1, max_size=settings.db_pool_max, open=False,
                               name="bench-ingest")  # fmt: skip
    await pool.open(wait=True)  # a running service has its pool up; not timed
    try:
        ingest = Ingest(settings, pool, address)
        started = time.perf_counter()
        task = asyncio.create_task(ingest.run(), name="bench-ingest")
        try:
            yield task, started
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                await task
    finally:
        await pool.close()


async def milepost_drain(db: BenchDb, broker: mq.BenchBroker, client_id: str, expect: Expect,
                         timeout_s: float) -> mq.Progress:  # fmt: skip
    """Start ingest on a queued session; progress in committed fixes, as a separate
    database session sees them, until every fix is in exactly once."""
    async with (
        await psycopg.AsyncConnection.connect(db.url, autocommit=True) as watch,
        _running_ingest(db, broker, client_id) as (task, t0),
    ):
        progress: mq.Progress = [(t0, 0)]
        deadline = t0 + timeout_s
        while True:
            done = expect.committed(await _newest(watch, expect))
            now = time.perf_counter()
            if done >= expect.total:
                stored = await _count(watch, expect)
                if stored == expect.total:
                    progress.append((time.perf_counter(), done))
                    return progress
                if stored > expect.total:
                    raise BenchError(f"{stored} rows for {expect.total} fixes: duplicates")
                done = stored  # committed out of order: wait for the count
            progress.append((now, done))
            if task.done():
                raise BenchError(f"ingest stopped: {task.exception()!r}")
            if now > deadline:
                raise BenchError(f"milepost committed {done} of {expect.total} fixes"
                                 f" in {timeout_s:.0f} s")  # fmt: skip
            await asyncio.sleep(DRAIN_POLL_S)


# ---------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class ProbeParams:
    host: str
    port: int
    vans: dict[str, str]
    db_url: str
    rate_msgs_per_s: float
    fixes_per_message: int
    warmup_s: float
    measure_s: float
    settle_s: float = 15.0


def _probe_payloads(p: ProbeParams, vehicles: list[str]
                    ) -> tuple[list[list[bytes]], list[list[int]], datetime]:  # fmt: skip
    """Per vehicle, enough messages for the whole phase, encoded before the clock starts
    (so the publisher only publishes), and each message's newest fix time. Fix times are
    synthetic, an hour back and 1 us apart; the probe records when it publishes each."""
    per = p.fixes_per_message
    n = int(p.rate_msgs_per_s * (p.warmup_s + p.measure_s)) // len(vehicles) + 2
    base_us = (time.time_ns() // 1000) - 3600 * 1_000_000
    rng = np.random.default_rng(7)
    payloads: list[list[bytes]] = []
    newest: list[list[int]] = []
    for _ in vehicles:
        lat = (52.5 + rng.normal(0, 0.05, n * per)).tolist()
        lon = (13.4 + rng.normal(0, 0.05, n * per)).tolist()
        payloads.append([gps_json.encode([
            GpsFix(ts_us=base_us + j, lon_deg=lon[j], lat_deg=lat[j], speed_mps=8.0,
                   heading_deg=90.0, acc_m=5.0, sats=9, seq=j)
            for j in range(m * per, (m + 1) * per)]) for m in range(n)])  # fmt: skip
        newest.append([base_us + (m + 1) * per - 1 for m in range(n)])
    return payloads, newest, us_to_datetime(base_us)


def latency_probe(p: ProbeParams, out: Connection) -> None:
    """Child process: publish at a paced rate, round robin over the vehicles, and poll
    ``gps_fix`` until every message is committed (or ``settle_s`` after the last
    publish). Sends a summary dict."""
    vehicles = list(p.vans)
    payloads, newest_of, since = _probe_payloads(p, vehicles)
    pubs = mq.LinePublishers(p.host, p.port, p.vans)
    pub_time: list[float] = []  # per message, perf_counter at the publish call
    seen_time: list[float] = []  # per message, perf_counter after the first poll that saw it
    pending: list[list[int]] = [[] for _ in vehicles]  # message numbers, per vehicle
    cursor = [0] * len(vehicles)
    polls: list[float] = []
    try:
        with psycopg.connect(p.db_url, autocommit=True) as db:
            start = time.perf_counter()
            end_publish = start + p.warmup_s + p.measure_s
            while True:
                now = time.perf_counter()
                if now < end_publish:
                    due = int((now - start) * p.rate_msgs_per_s)
                    while len(pub_time) < due:
                        i = len(pub_time)
                        v = i % len(vehicles)
                        pub_time.append(time.perf_counter())
                        pubs.publish(vehicles[v], payloads[v][len(pending[v])])
                        seen_time.append(math.inf)
                        pending[v].append(i)
                rows: dict[str, int | None] = dict(db.execute(_NEWEST, (since, vehicles)
                                                              ).fetchall())  # fmt: skip
                seen = time.perf_counter()
                polls.append(seen)
                for v, vid in enumerate(vehicles):
                    newest = rows.get(vid)
                    k, q = cursor[v], pending[v]
                    while newest is not None and k < len(q) and newest_of[v][k] <= newest:
                        seen_time[q[k]] = seen
                        k += 1
                    cursor[v] = k
                everything = all(c == len(q) for c, q in zip(cursor, pending, strict=True))
                if now >= end_publish and (everything or now > end_publish + p.settle_s):
                    break
                time.sleep(max(0.0, POLL_S - (time.perf_counter() - now)))
            stored = db.execute("SELECT count(*) FROM gps_fix WHERE time >= %s",
                                (since,)).fetchone()  # fmt: skip
    finally:
        pubs.close()
    pt, st = np.asarray(pub_time), np.asarray(seen_time)
    measured = pt >= start + p.warmup_s
    lat_s = st[measured] - pt[measured]
    gaps = np.diff(np.asarray(polls)) if len(polls) > 1 else np.zeros(1)

    def pct(x: NDArray[np.float64], q: float) -> float:
        return float(np.percentile(x, q, method="higher")) if len(x) else math.nan

    second = np.floor(pt[measured] - (start + p.warmup_s)).astype(np.int64)
    per_second = [[pct(lat_s[second == k], 50), pct(lat_s[second == k], 99)]
                  for k in range(math.ceil(p.measure_s))]  # fmt: skip
    seen_sorted = np.sort(st[np.isfinite(st)])
    committed_rate = math.nan
    if len(seen_sorted) >= 10:  # messages committed a second between 10 % and 90 % of them
        lo, hi = seen_sorted[len(seen_sorted) // 10], seen_sorted[len(seen_sorted) * 9 // 10]
        if hi > lo:
            committed_rate = float(len(seen_sorted) * 8 // 10 / (hi - lo))
    out.send({
        "rate_target_msgs_per_s": p.rate_msgs_per_s,
        "committed_msgs_per_s": committed_rate,
        "rate_achieved_msgs_per_s": float(measured.sum() / p.measure_s),
        "fixes_per_message": p.fixes_per_message,
        "published_messages": len(pt), "measured_messages": int(measured.sum()),
        "unseen_messages": int(np.isinf(st).sum()),
        "stored_rows": int(stored[0]) if stored else 0,
        "expected_rows": len(pt) * p.fixes_per_message,
        "p50_s": pct(lat_s, 50), "p90_s": pct(lat_s, 90), "p99_s": pct(lat_s, 99),
        "max_s": pct(lat_s, 100),
        "p50_p99_per_second_s": per_second,
        "poll_interval_median_s": float(np.median(gaps)),
        "poll_interval_p99_s": float(np.percentile(gaps, 99)),
    })  # fmt: skip


async def milepost_latency(db: BenchDb, broker: mq.BenchBroker, client_id: str,
                           probe: ProbeParams) -> dict[str, Any]:  # fmt: skip
    ctx = mp.get_context("spawn")  # a clean interpreter: no event loop or threads inherited
    recv, send = ctx.Pipe(duplex=False)
    limit = probe.warmup_s + probe.measure_s + probe.settle_s + 60.0
    async with _running_ingest(db, broker, client_id) as (task, _):
        proc = ctx.Process(target=latency_probe, args=(probe, send), name="bench-latency-probe")
        proc.start()
        send.close()
        try:
            ready = await asyncio.to_thread(recv.poll, limit)
            if not ready:
                raise BenchError(f"latency probe gave no result within {limit:.0f} s")
            try:
                result: dict[str, Any] = recv.recv()
            except EOFError:
                raise BenchError("latency probe died (its traceback is above)") from None
        finally:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
            recv.close()
        if task.done():
            raise BenchError(f"ingest stopped during the latency phase: {task.exception()!r}")
    return result


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class Series:
    what: str
    unit: str
    runs: list[float]
    whole_runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def _say(msg: str) -> None:
    print(f"   {msg}", flush=True, file=sys.stderr)


def run(db: BenchDb, p: Params) -> dict[str, Any]:
    work = build_workload(p)
    vehicles = list(work.frame.vehicles)
    n_single = work.single_expect.total
    n_batched = sum(len(v) for v in work.batched.values())
    copy_payload = gps_copy_payload(work.frame.take(np.arange(work.batched_rows)))
    naive = naive_rows(work.frame, p.naive_messages)
    s: dict[str, Series] = {
        "db_copy": Series(f"binary COPY of {work.batched_rows:,} fixes, one transaction",
                          "fixes/s", [], []),
        "client_aiomqtt311": Series(f"bare aiomqtt subscriber, MQTT 3.1.1 as ingest,"
                                    f" {n_single:,} QoS 1 msgs", "msgs/s", [], []),
        "client_aiomqtt": Series("  reference: the same, MQTT 5", "msgs/s", [], []),
        "client_paho": Series("  reference: bare paho subscriber, MQTT 5", "msgs/s", [], []),
        "naive": Series(f"INSERT + commit per message, {len(naive):,} one-fix msgs", "fixes/s",
                        [], []),
        "milepost_single": Series(f"milepost, {n_single:,} one-fix msgs, publish -> commit",
                                  "fixes/s", [], []),
        "milepost_batched": Series(
            f"milepost, {n_batched:,} msgs x {p.fixes_per_message} fixes, publish -> commit",
            "fixes/s", [], []),
    }  # fmt: skip
    single_timeout = 60 + n_single / 500
    batched_timeout = 60 + work.batched_rows / 5000
    broker = mq.BenchBroker.start(vehicles)
    try:
        for r in range(p.rounds):
            tag = f"{r}-{secrets.token_hex(3)}"
            _say(f"round {r + 1}/{p.rounds}: database ceiling, naive")
            db.truncate()
            s["db_copy"].runs.append(copy_ceiling(db, copy_payload, work.batched_rows))
            s["db_copy"].whole_runs.append(s["db_copy"].runs[-1])
            db.truncate()
            s["naive"].runs.append(naive_inserts(db, naive))
            s["naive"].whole_runs.append(s["naive"].runs[-1])
            db.truncate()

            queued = ("aiomqtt", "aiomqtt311", "paho", "single")
            ids = {k: f"bench-{k}-{tag}" for k in (*queued, "batched")}
            for k in queued:
                mq.open_session(broker, ids[k])
            _say(f"round {r + 1}/{p.rounds}: queueing {n_single:,} one-fix messages")
            mq.publish_backlog(broker, work.single, 60 + n_single / 1000)
            order = ["client_aiomqtt", "client_aiomqtt311", "client_paho", "milepost_single"]
            for name in order[r % 4 :] + order[: r % 4]:  # rotate: share the noise
                _say(f"round {r + 1}/{p.rounds}: drain {name}")
                if name in ("client_aiomqtt", "client_aiomqtt311"):
                    progress = asyncio.run(aiomqtt_drain(
                        broker, ids[name.removeprefix("client_")], n_single, single_timeout,
                        mqtt5=name == "client_aiomqtt"))  # fmt: skip
                elif name == "client_paho":
                    progress = mq.paho_drain(broker, ids["paho"], n_single, single_timeout)
                else:
                    progress = asyncio.run(milepost_drain(db, broker, ids["single"],
                                                          work.single_expect, single_timeout))
                sustained, whole = rates(progress, n_single)
                s[name].runs.append(sustained)
                s[name].whole_runs.append(whole)
            for k in queued:
                mq.discard_session(broker, ids[k])

            db.truncate()
            mq.open_session(broker, ids["batched"])
            _say(f"round {r + 1}/{p.rounds}: queueing {n_batched:,} x {p.fixes_per_message}"
                 " fixes, drain milepost_batched")  # fmt: skip
            mq.publish_backlog(broker, work.batched, 60 + work.batched_rows / 5000)
            progress = asyncio.run(milepost_drain(db, broker, ids["batched"],
                                                  work.batched_expect, batched_timeout))
            mq.discard_session(broker, ids["batched"])
            sustained, whole = rates(progress, work.batched_rows)
            s["milepost_batched"].runs.append(sustained)
            s["milepost_batched"].whole_runs.append(whole)

        latency: dict[str, dict[str, Any]] = {}
        for key, series, per in (("single", "milepost_single", 1),
                                 ("batched", "milepost_batched", p.fixes_per_message)):
            # live: what the whole machine sustains with the publishers, the broker's in
            # and out, ingest and PostgreSQL on the same cores (a drain has the broker
            # only sending): the highest offered rate that is kept up with
            drain = s[series].median / per
            live_msgs, trials = _knee(db, broker, key, per, drain, p)
            live = live_msgs * per
            rate = live_msgs / 2
            _say(f"latency, {per}-fix messages at {rate:,.0f} msgs/s (half of {live:,.0f}"
                 f" fixes/s live) for {p.warmup_s:g} + {p.latency_s:g} s")  # fmt: skip
            latency[key] = _probe(db, broker, f"latency-{key}", rate, per, p)
            latency[key]["sustained_fixes_per_s"] = live
            latency[key]["drain_fixes_per_s"] = s[series].median
            latency[key]["live_trials"] = trials
    finally:
        broker.stop()
    return _report(s, latency, p)


KNEE_RUN_S: Final = (1.0, 4.0, 3.0)  # warm-up, measured, settle of each trial
KNEE_MAX_S: Final = 1.0  # kept up: every message committed within this
KNEE_STEPS: Final = 3  # halvings of the interval between kept up and not


def _knee(db: BenchDb, broker: mq.BenchBroker, key: str, per: int, drain: float,
          p: Params) -> tuple[float, list[dict[str, Any]]]:  # fmt: skip
    """The highest rate (msgs/s) kept up with: every message committed, none later than
    KNEE_MAX_S after its publish, at the rate offered. From drain/8, doubling up to the
    drain rate, then KNEE_STEPS bisections; returns it and every trial."""
    trials: list[dict[str, Any]] = []

    def kept_up(rate: float) -> bool:
        r = _probe(db, broker, f"knee-{key}", rate, per, p, KNEE_RUN_S)
        ok = bool(r["unseen_messages"] == 0 and r["max_s"] < KNEE_MAX_S
                  and r["rate_achieved_msgs_per_s"] >= 0.95 * rate)  # fmt: skip
        trials.append({"rate_msgs_per_s": rate, "kept_up": ok, "p99_s": r["p99_s"],
                       "max_s": r["max_s"], "achieved_msgs_per_s": r["rate_achieved_msgs_per_s"],
                       "unseen_messages": r["unseen_messages"]})  # fmt: skip
        _say(f"  {rate:,.0f} msgs/s: {'kept up' if ok else 'fell behind'}"
             f" (max {r['max_s']:.2f} s)")  # fmt: skip
        return ok

    good, bad, rate = 0.0, drain, drain / 8
    while rate < drain:
        if not kept_up(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    else:
        if kept_up(drain):
            return drain, trials
    for _ in range(KNEE_STEPS):
        mid = (good + bad) / 2
        if kept_up(mid):
            good = mid
        else:
            bad = mid
    return good, trials


def _probe(db: BenchDb, broker: mq.BenchBroker, name: str, rate: float, per: int,
           p: Params, run_s: tuple[float, float, float] | None = None
           ) -> dict[str, Any]:  # fmt: skip
    db.truncate()
    client_id = f"bench-{name}-{secrets.token_hex(3)}"
    mq.open_session(broker, client_id)
    warmup, measure, settle = run_s or (p.warmup_s, p.latency_s, 15.0)
    probe = ProbeParams(broker.host, broker.port, broker.vans, db.url, rate, per,
                        warmup, measure, settle)  # fmt: skip
    try:
        return asyncio.run(milepost_latency(db, broker, client_id, probe))
    finally:
        mq.discard_session(broker, client_id)


def _ratio(s: dict[str, Series], num: str, den: str) -> tuple[float, list[float]]:
    """Median over rounds of the same round's ratio: both sides measured minutes apart
    at most, so a noisy neighbour shifts both alike."""
    per_round = [a / b for a, b in zip(s[num].runs, s[den].runs, strict=True)]
    return statistics.median(per_round), per_round


def _report(s: dict[str, Series], latency: dict[str, dict[str, Any]], p: Params
            ) -> dict[str, Any]:  # fmt: skip
    per = p.fixes_per_message
    targets: list[tuple[str, tuple[float, list[float]], str, float]] = [
        ("one-fix msgs / client ceiling (aiomqtt, MQTT 3.1.1 as ingest)",
         _ratio(s, "milepost_single", "client_aiomqtt311"), ">=", 0.7),
        ("one-fix msgs / naive INSERT per message", _ratio(s, "milepost_single", "naive"),
         ">=", 3.0),
        (f"{per}-fix msgs / database ceiling (fixes/s)", _ratio(s, "milepost_batched", "db_copy"),
         ">=", 0.5),
        ("p99 latency (s), one-fix msgs, half sustained rate", (latency["single"]["p99_s"], []),
         "<", 1.0),
        (f"p99 latency (s), {per}-fix msgs, half sustained rate",
         (latency["batched"]["p99_s"], []), "<", 1.0),
    ]  # fmt: skip
    return {
        "params": asdict(p),
        "method": __doc__,
        "measurements": {k: {"what": v.what, "unit": v.unit, "median": v.median, "runs": v.runs,
                             "whole_drain_runs": v.whole_runs} for k, v in s.items()},
        "reference": {
            "aiomqtt_mqtt311_vs_mqtt5": _ratio(s, "client_aiomqtt311", "client_aiomqtt")[0],
            "paho_vs_aiomqtt": _ratio(s, "client_paho", "client_aiomqtt")[0],
            "milepost_single_vs_aiomqtt_mqtt311": _ratio(s, "milepost_single",
                                                         "client_aiomqtt311")[0],
            "milepost_single_vs_paho": _ratio(s, "milepost_single", "client_paho")[0],
        },
        "latency": latency,
        "targets": [{"name": n, "value": v, "per_round": rounds, "op": op, "target": t,
                     "pass": bool(v >= t if op == ">=" else v < t)}
                    for n, (v, rounds), op, t in targets],
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """The human-readable summary of :func:`run`'s result."""
    meas, lat = result["measurements"], result["latency"]
    lines = ["", "milepost ingest benchmark (issue 3): medians of "
             f"{result['params']['rounds']} rounds, sustained rate = 10 %..90 % of each drain",
             ""]  # fmt: skip
    w = max(len(v["what"]) for v in meas.values())
    for key in ("db_copy", "client_aiomqtt", "client_aiomqtt311", "client_paho", "naive",
                "milepost_single", "milepost_batched"):  # fmt: skip
        v = meas[key]
        runs = ", ".join(f"{x:,.0f}" for x in v["runs"])
        lines.append(f"  {v['what']:<{w}}  {v['median']:>10,.0f} {v['unit']:<7}  [{runs}]")
    lines.append("")
    for v in lat.values():
        lines += [
            f"  latency, {v['fixes_per_message']}-fix msgs at {v['rate_achieved_msgs_per_s']:,.0f}"
            f" msgs/s (half of {v['sustained_fixes_per_s']:,.0f} fixes/s sustained live;"
            f" the drain: {v['drain_fixes_per_s']:,.0f}):",
            f"      p50 {v['p50_s'] * 1000:,.0f} ms, p90 {v['p90_s'] * 1000:,.0f} ms,"
            f" p99 {v['p99_s'] * 1000:,.0f} ms, max {v['max_s'] * 1000:,.0f} ms over"
            f" {v['measured_messages']:,} msgs; {v['unseen_messages']} never committed;"
            f" rows stored {v['stored_rows']:,} of {v['expected_rows']:,}",
        ]  # fmt: skip
    poll = max(v["poll_interval_median_s"] for v in lat.values())
    lines += [f"  (latency = publish call -> end of the first poll of gps_fix that shows the row;"
              f" polls every ~{poll * 1000:.0f} ms, so an upper bound within one poll)", ""]
    ref = result["reference"]
    lines += [
        f"  reference ratios: aiomqtt MQTT 3.1.1 / MQTT 5 = {ref['aiomqtt_mqtt311_vs_mqtt5']:.2f},"
        f" paho / aiomqtt (both MQTT 5) = {ref['paho_vs_aiomqtt']:.2f}",
        "                    milepost one-fix / aiomqtt MQTT 3.1.1 ="
        f" {ref['milepost_single_vs_aiomqtt_mqtt311']:.2f},"
        f" / paho = {ref['milepost_single_vs_paho']:.2f}",
    ]  # fmt: skip
    lines.append("")
    nw = max(len(t["name"]) for t in result["targets"])
    lines.append("  targets (ratios: median over rounds of the same round's ratio)")
    for t in result["targets"]:
        verdict = "PASS" if t["pass"] else "MISS"
        rounds = f"  [{', '.join(f'{x:.2f}' for x in t['per_round'])}]" if t["per_round"] else ""
        lines.append(f"  {t['name']:<{nw}}  {t['value']:>6.2f}  {t['op']} {t['target']:<3g}"
                     f"  {verdict}{rounds}")  # fmt: skip
    return "\n".join(lines) + "\n"
