"""The faults, each against a rig of its own, each ending with its counts.

Every scenario runs vans publishing numbered fixes at QoS 1 (one in ``BAD_EVERY``
messages an undecodable payload), does its damage while they publish, lets everything
drain, and counts from the database against the vans' own records:

* ``published``: fixes in messages the broker acknowledged (PUBACK);
* ``stored``: distinct fixes in ``gps_fix``; ``duplicates``: rows beyond one per fix;
* ``rejected``: planted bad payloads found in ``dead_letter`` (of ``bad_sent``);
* ``lost``: acknowledged fixes not stored. It must be 0, and so must ``duplicates``.

Serial reads and OsmAnd reports have their own acknowledgement (a line the reader wrote
while plugged in; an HTTP 200) and are counted the same way.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import psycopg

from api.keys import create_key
from faults.rig import STATE_DIR, T0_US, PtyGate, Rig, RigError, Van, rig, wait_until
from milepost import stack

BAD_EVERY: Final = 97


@dataclass
class Load:
    vans: int = 6
    rate_hz: float = 10.0  # messages a second per van
    seconds: float = 40.0  # publishing, the fault included
    faults: int = 3  # kills or restarts per run
    outage_s: float = 30.0  # PostgreSQL down
    garbage_s: float = 60.0  # a gate sending garbage between its reads
    per_message: int = 1  # fixes a message (more: a JSON array, as a gateway sends)

    def short(self) -> Load:
        return Load(vans=3, rate_hz=10.0, seconds=12.0, faults=2, outage_s=5.0, garbage_s=3.0)


@dataclass
class Counts:
    fault: str
    published: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_sent: int = 0
    lost: int = 0
    unacked_stored: int = 0  # stored though its PUBACK never came (lost with a connection)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what went wrong besides the counts

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.duplicates == 0 and self.rejected == self.bad_sent
                and not self.problems)  # fmt: skip

    def add_van(self, r: Rig, van: Van) -> None:
        acked, sent = van.acked_seqs(), van.sent_seqs()
        stored, rows = r.stored_seqs(van)
        self.published += len(acked)
        self.stored += len(stored & sent)
        self.duplicates += rows - len(stored)
        self.lost += len(acked - stored)
        self.unacked_stored += len((stored & sent) - acked)
        rejected, again = r.dead_letters(van)
        self.rejected += rejected
        self.bad_sent += van.bad_sent
        if again:
            self.notes.append(f"{van.vehicle}: {again} bad payload(s) delivered again and"
                              " stored again in dead_letter")  # fmt: skip


class Publishing:
    """Every van publishes ``per_message`` fixes a message (numbered on) at ``rate_hz``
    in a thread, until stopped."""

    def __init__(self, vans: list[Van], rate_hz: float, per_message: int = 1) -> None:
        self.vans, self.rate_hz, self.per_message = vans, rate_hz, per_message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publishing", daemon=True)
        self.messages = 0

    def _run(self) -> None:
        start, seq = time.monotonic(), 0
        while not self._stop.is_set():
            seqs = list(range(seq * self.per_message, (seq + 1) * self.per_message))
            for van in self.vans:
                van.publish(seqs)
                self.messages += 1
                if self.messages % BAD_EVERY == 0:
                    van.publish_bad()
            seq += 1
            time.sleep(max(0.0, start + seq / self.rate_hz - time.monotonic()))

    def __enter__(self) -> Publishing:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _vans(r: Rig, **kw: Any) -> list[Van]:
    vans = [Van(r.broker, vid, **kw) for vid in r.vans]
    for v in vans:
        v.wait_connected()
    return vans


def settle(r: Rig, vans: list[Van], timeout: float = 120.0) -> None:
    """Until every message has its PUBACK and everything acknowledged is stored."""
    wait_until(lambda: all(v.all_acked() for v in vans), timeout, "every PUBACK")

    def drained() -> bool:
        return all(v.acked_seqs() <= r.stored_seqs(v)[0] for v in vans) and all(
            r.dead_letters(v)[0] >= v.bad_sent for v in vans)

    # what is still missing then is counted as lost, with the numbers
    with contextlib.suppress(RigError):
        wait_until(drained, timeout, "every acknowledged fix stored")


def tally(name: str, r: Rig, vans: list[Van], t0: float) -> Counts:
    c = Counts(name, seconds=round(time.monotonic() - t0, 1))
    for v in vans:
        c.add_van(r, v)
        v.close()
    return c


def _random_moments(n: int, seconds: float, rng: random.Random) -> list[float]:
    """``n`` moments in the middle of a run, at least a second apart."""
    return sorted(rng.uniform(0.15, 0.85) * seconds for _ in range(n))


# ---------------------------------------------------------------- the faults


def ingest_kill9(load: Load, rng: random.Random) -> Counts:
    with rig("ingest_kill9", load.vans) as r:
        t0 = time.monotonic()
        vans = _vans(r)
        with Publishing(vans, load.rate_hz, load.per_message):
            for at in _random_moments(load.faults, load.seconds, rng):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                r.ingest.kill9()
                time.sleep(rng.uniform(0.5, 2.0))
                r.ingest.start("subscribed to")
            time.sleep(max(0.0, t0 + load.seconds - time.monotonic()))
        settle(r, vans)
        c = tally("kill -9 milepost ingest", r, vans, t0)
        c.notes.append(f"{load.faults} kills, ingest started {r.ingest.starts} times")
        return c


def postgres_stopped(load: Load, rng: random.Random) -> Counts:
    with rig("postgres_stopped", load.vans) as r:
        t0 = time.monotonic()
        vans = _vans(r)
        try:
            with Publishing(vans, load.rate_hz, load.per_message):
                time.sleep(load.seconds * 0.2)
                stack.stop_postgres(STATE_DIR)
                time.sleep(load.outage_s)
                stack.start_postgres(STATE_DIR)
                time.sleep(load.seconds * 0.3)
        finally:
            stack.start_postgres(STATE_DIR)
        settle(r, vans)
        c = tally(f"PostgreSQL stopped {load.outage_s:g} s", r, vans, t0)
        if not (r.ingest.alive() and r.ingest.starts == 1):
            c.problems.append("milepost ingest did not survive the outage")
        return c


def broker_restarted(load: Load, rng: random.Random) -> Counts:
    with rig("broker_restarted", load.vans) as r:
        t0 = time.monotonic()
        vans = _vans(r)
        with Publishing(vans, load.rate_hz, load.per_message):
            for at in _random_moments(load.faults, load.seconds, rng):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                r.broker.restart(down_s=rng.uniform(0.5, 3.0))
            time.sleep(max(0.0, t0 + load.seconds - time.monotonic()))
        settle(r, vans)
        c = tally("Mosquitto restarted", r, vans, t0)
        c.notes.append(f"{load.faults} restarts; ingest started {r.ingest.starts} time(s)")
        return c


def offline_backlog(load: Load, rng: random.Random) -> Counts:
    """Vans offline for 20 minutes flush their backlog at once, out of order, as arrays."""
    with rig("offline_backlog", load.vans) as r:
        t0 = time.monotonic()
        vans = _vans(r)
        backlog = list(range(1200))  # 20 minutes at one fix a second
        for van in vans:
            order = backlog[:]
            rng.shuffle(order)
            for i in range(0, len(order), 50):
                van.publish(order[i:i + 50])
        settle(r, vans)
        newest = {vid: t for vid, t in r.sql("SELECT vehicle_id, (extract(epoch FROM time)"
                                             " * 1e6)::bigint FROM vehicle_latest")}
        c = tally("vans offline 20 min, backlog out of order", r, vans, t0)
        wrong = [v.vehicle for v in vans if newest.get(v.vehicle) != v.ts_us(backlog[-1])]
        if wrong:
            c.problems.append(f"vehicle_latest not at the newest fix for {', '.join(wrong)}")
        return c


def clock_skew(load: Load, rng: random.Random) -> Counts:
    """Device clocks 10 minutes off: a quarter of the vans ahead, a quarter behind, the
    rest right. Every fix is stored once, under the time it happened (``time``, its van's
    clock corrected by the fleet's) and the van's own (``device_time``); a van behind is
    taken at its word until that persisted a minute of its time (docs/lifecycle.md)."""
    n = max(load.vans, 5)  # enough right ones to outvote either group
    with rig("clock_skew", n) as r:
        t0 = time.monotonic()
        now_us = time.time_ns() // 1000
        ten, k = 600_000_000, max(1, n // 4)
        skew = {vid: ten if i < k else -ten if i < 2 * k else 0 for i, vid in enumerate(r.vans)}
        vans = [Van(r.broker, vid, clock_offset_us=now_us - T0_US + skew[vid])
                for vid in r.vans]  # fmt: skip
        for v in vans:
            v.wait_connected()
        with Publishing(vans, load.rate_hz, load.per_message):
            time.sleep(min(load.seconds, 10.0))
        settle(r, vans)
        wrong, unset = [], 0
        for v in vans:
            if not v.acked_seqs():
                continue
            seq, us = max(v.acked_seqs()), skew[v.vehicle]
            got = r.sql("SELECT (extract(epoch FROM time) * 1e6)::bigint, (extract(epoch FROM"
                        " device_time) * 1e6)::bigint FROM gps_fix WHERE vehicle_id = %s"
                        " ORDER BY coalesce(device_time, time) DESC LIMIT 1", v.vehicle)
            want = (v.ts_us(seq) - us, v.ts_us(seq) if us else None)
            # within 2 s: the vans' clocks run at 10x (a fix a second at 10 a second), and
            # ingest learns an offset to the second from fixes received together
            if not got or not _near(got[0], want, 2_000_000):
                wrong.append(f"{v.vehicle} ({us // 1_000_000:+d} s): its newest fix stored"
                             f" at (time, device_time) {got[:1]}, not {want}")  # fmt: skip
            if us:
                unset += int(r.sql("SELECT count(*) FROM gps_fix WHERE vehicle_id = %s AND"
                                   " device_time IS NULL", v.vehicle)[0][0])  # fmt: skip
        c = tally("device clocks 10 min off", r, vans, t0)
        c.problems.extend(wrong)
        c.notes.append(f"{k} van(s) ahead, {k} behind, {n - 2 * k} right; {unset} fix(es) of"
                       " theirs stored before their clock was known")  # fmt: skip
        return c


def _near(got: tuple[Any, ...], want: tuple[int | None, ...], tol_us: int) -> bool:
    return all((a is None and b is None) or (a is not None and b is not None and abs(a - b)
               <= tol_us) for a, b in zip(got, want, strict=True))  # fmt: skip


def api_kill9(load: Load, rng: random.Random) -> Counts:
    """OsmAnd reports over HTTP while ``milepost api`` is killed: every report it answered
    200 is stored (by ingest, from fix_inbox), once."""
    with rig("api_kill9", 1) as r:
        t0 = time.monotonic()
        vid, device = r.vans[0], f"fault-{r.vans[0].lower()}"
        r.sql("INSERT INTO vehicle (vehicle_id, osmand_id) VALUES (%s, %s)", vid, device)
        acked: set[int] = set()
        sent = 0
        stop = threading.Event()

        def report() -> None:
            nonlocal sent
            k = 0
            with httpx.Client(base_url=r.api_url, timeout=5.0) as client:
                while not stop.is_set():
                    ts = T0_US // 1_000_000 + k
                    try:
                        resp = client.get("/osmand", params={"id": device, "lat": "52.5",
                                                             "lon": "13.4", "timestamp": str(ts)})
                        if resp.status_code == 200:
                            acked.add(k)
                    except httpx.HTTPError:
                        pass  # not acknowledged: the phone sends it again later (not counted)
                    sent += 1
                    k += 1
                    time.sleep(1.0 / load.rate_hz)

        worker = threading.Thread(target=report, daemon=True)
        worker.start()
        for at in _random_moments(load.faults, load.seconds, rng):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            r.api.kill9()
            time.sleep(rng.uniform(0.5, 2.0))
            r.api.start("Uvicorn running")
        time.sleep(max(0.0, t0 + load.seconds - time.monotonic()))
        stop.set()
        worker.join(10)
        # answered once in fix_inbox; ingest, which stays up, moves them into gps_fix
        wait_until(lambda: r.sql("SELECT count(*) FROM fix_inbox WHERE processed_at IS NULL")
                   == [(0,)], 30, "every answered report through ingest")  # fmt: skip
        rows = r.sql("SELECT (extract(epoch FROM time))::bigint FROM gps_fix"
                     " WHERE vehicle_id = %s", vid)  # fmt: skip
        stored = {s - T0_US // 1_000_000 for (s,) in rows}
        c = Counts("kill -9 milepost api (OsmAnd over HTTP)", published=len(acked),
                   stored=len(stored), duplicates=len(rows) - len(stored),
                   lost=len(acked - stored), unacked_stored=len(stored - acked),
                   seconds=round(time.monotonic() - t0, 1))  # fmt: skip
        c.notes.append(f"{sent} reports sent, {sent - len(acked)} not answered 200")
        return c


def gate_unplugged(load: Load, rng: random.Random) -> Counts:
    """A dock-door reader unplugged and plugged in again, then sending garbage between its
    reads: every line it wrote while plugged in is a stored read, the garbage dead
    letters, and ingest keeps reading."""
    with rig("gate_unplugged", 1, gate=True) as r:
        t0 = time.monotonic()
        assert r.gate_link is not None
        gate = PtyGate(r.gate_link)
        gate_id = f"G-{r.vans[0]}"
        with psycopg.connect(r.db_url, autocommit=True) as conn:
            key = create_key(conn, "dispatcher", "faults")
        doc = {"stops": [{"stop_id": "HUB-F", "kind": "hub", "radius_m": 100,
                          "geofence": {"type": "Point", "coordinates": [13.4, 52.5]}},
                         {"stop_id": "DOCK-F", "kind": "dock", "hub_stop_id": "HUB-F",
                          "radius_m": 8,
                          "geofence": {"type": "Point", "coordinates": [13.4001, 52.5]}}],
               "gates": [{"gate_id": gate_id, "dock_stop_id": "DOCK-F",
                          "url": str(r.gate_link), "protocol": "ascii", "baud": 115200,
                          "antennas": {"1": "hall", "2": "dock"}}]}  # fmt: skip
        resp = httpx.put(f"{r.api_url}/v1/manifest", json=doc,
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        resp.raise_for_status()

        def stored_reads() -> int:
            rows = r.sql("SELECT coalesce(sum(read_count), 0) FROM tag_read WHERE gate_id = %s",
                         gate_id)  # fmt: skip
            return int(rows[0][0])

        def gate_reads(n: int, garbage_every: int = 0) -> None:
            for i in range(n):
                gate.read_line(f"3034{rng.randrange(16**20):020X}", 1 + i % 2)
                if garbage_every and i % garbage_every == 0:
                    gate.garbage(rng.randint(5, 120))
                time.sleep(0.01)

        def until_open(what: str) -> tuple[int, int]:
            """A read every half second until ingest stores one: the port is open. (pyserial
            flushes what the terminal held when it opens it, as a real port loses what a
            reader sends while nobody listens.) Then (lines written, reads stored)."""
            deadline, before = time.monotonic() + 30, stored_reads()
            while stored_reads() == before:
                if time.monotonic() > deadline:
                    raise RigError(f"{what}: no read stored")
                gate_reads(1)
                time.sleep(0.5)
            time.sleep(1.0)  # what was in flight lands
            return gate.lines_written, stored_reads()

        counted = stored_counted = 0
        for phase in ("plugged in", "replugged, with garbage"):
            written0, stored0 = until_open(f"the gate {phase}")  # within RELOAD_S, or a retry
            garbage = "garbage" in phase
            gate_reads(int((load.garbage_s if garbage else 3.0) * 50),
                       garbage_every=5 if garbage else 0)  # fmt: skip
            target = stored0 + gate.lines_written - written0
            wait_until(lambda: stored_reads() >= target, 30, f"the reads {phase}")  # noqa: B023
            time.sleep(1.0)
            counted += gate.lines_written - written0
            stored_counted += stored_reads() - stored0
            if phase == "plugged in":
                gate.unplug()
                time.sleep(3.0)
                gate.plug()
        dead = int(r.sql("SELECT count(*) FROM dead_letter WHERE source = %s",
                         f"gate:{gate_id}")[0][0])  # fmt: skip
        gate.unplug()
        c = Counts("gate unplugged, replugged, then garbage", published=counted,
                   stored=stored_counted, lost=max(0, counted - stored_counted),
                   duplicates=max(0, stored_counted - counted),
                   seconds=round(time.monotonic() - t0, 1))  # fmt: skip
        c.notes.append(f"{gate.garbage_written} garbage lines, {dead} dead letters from the gate")
        if dead == 0:
            c.problems.append("the garbage left no dead letter")
        return c


FAULTS: Final[dict[str, Callable[[Load, random.Random], Counts]]] = {
    "ingest_kill9": ingest_kill9,
    "api_kill9": api_kill9,
    "postgres_stopped": postgres_stopped,
    "broker_restarted": broker_restarted,
    "gate_unplugged": gate_unplugged,
    "offline_backlog": offline_backlog,
    "clock_skew": clock_skew,
}
