"""`milepost simulate` plays a seeded day live into the running ingest: vans over MQTT under
their own accounts, a dock-door reader on a pseudo-terminal; what it planted comes out."""

from __future__ import annotations

import asyncio
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import orjson
import psycopg

from ingest.manifest import parse_manifest
from ingest.replay import pipeline_for, replay
from ingest.webhooks import type_event_id
from milepost import stack
from simulators.day import FAULTS_DAY, FAULTS_DAY_SEED, make_day
from simulators.live import LiveStats, run_day, schedule
from tests.integration.conftest import (
    ROOT,
    STATE_DIR,
    Proc,
    cli_with,
    forget_session,
    free_port,
    scratch_database,
    wait_until,
)
from tests.integration.test_gps_slice import count
from tests.integration.test_webhooks import Receiver


def test_a_simulated_morning_loads_drives_and_is_tracked(
    ingest: Proc, env: dict[str, str], db: psycopg.Connection, cli: Callable[..., str],
) -> None:
    # gates need the wall clock's pace: their reads are stamped by the host
    fast = subprocess.run(
        [sys.executable, "-m", "milepost", "simulate", "--gates", "1", "--speedup", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert fast.returncode == 2 and "--gates 1 needs --speedup 1" in fast.stderr
    # from a minute before VAN-001 leaves its dock door
    sim = subprocess.run(
        [sys.executable, "-m", "milepost", "simulate", "--vans", "2", "--stops", "3",
         "--gates", "1", "--rate", "1", "--seed", "5", "--duration", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert "manifest loaded: " in sim.stderr and "2 vans connected" in sim.stderr
    vans = ("VAN-001", "VAN-002")

    def n(sql: str) -> int:
        row = db.execute(sql, (list(vans),)).fetchone()
        return int(row[0]) if row else 0

    # both vans are seen (VAN-002 waits in the hub's yard); inventories, temperatures too
    wait_until(lambda: n("SELECT count(DISTINCT vehicle_id) FROM gps_fix"
                         " WHERE vehicle_id = ANY(%s)") == 2, what="both vans' fixes")
    assert n("SELECT count(*) FROM cargo_scan WHERE vehicle_id = ANY(%s)") > 0
    assert n("SELECT count(*) FROM sensor_reading WHERE vehicle_id = ANY(%s)") > 0
    # the first van left the hub with what its cargo reader saw aboard
    wait_until(lambda: n("SELECT count(*) FROM parcel_latest WHERE status = 'OutForDelivery'"
                         " AND vehicle_id = (%s::text[])[1]") > 0, timeout=20,
               what="VAN-001's parcels out for delivery")  # fmt: skip
    # the dock door's reader saw the van parked at it, through its pseudo-terminal
    van_epc = db.execute("SELECT epc FROM vehicle WHERE vehicle_id = 'VAN-001'").fetchone()
    assert van_epc is not None
    assert db.execute("SELECT count(*) FROM tag_read WHERE gate_id = 'G-1' AND epc = %s",
                      (van_epc[0],)).fetchone() > (0,)  # fmt: skip
    # nothing it sent was refused
    assert n("SELECT count(*) FROM dead_letter WHERE split_part(source, '/', 2) = ANY(%s)") == 0


# A small day with every kind of fault (seed 6 plants all five exceptions and two failed
# attempts), played from a minute before the first van leaves: about 62 min of day time
DAY_50X = FAULTS_DAY  # at FAULTS_DAY_SEED: all five exceptions and two failed attempts


def test_a_day_played_at_50x_over_mqtt_ends_as_its_replay_in_event_time(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """Event time (DESIGN.md): the day's van messages published through the broker at 50x
    the wall clock, into an ingest of their own, give every parcel the status, sub-status
    and van, and the bindings, that the same messages give replayed through the pipeline in
    one-second batches. No gates: their reads are stamped by the host on receipt."""
    _play_day_and_compare(spawn, env, tmp_path, "50x", kills_at_s=())


def test_a_day_with_ingest_killed_three_times_ends_as_its_replay(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """Issue 8's fault, on the lifecycle: the same day at 50x with ``kill -9`` of ingest at
    three seeded moments (a new ingest, same session, at once) ends with the same parcel
    events and states as the replay: nothing the crashes interrupted (a batch in flight,
    an attempt in its grace, a removal in its minute) is lost or reported twice; and a
    customer's webhook receiver gets every one of those events, by event id."""
    rng = random.Random(8)
    kills = sorted(rng.uniform(8.0, 65.0) for _ in range(3))
    receiver = Receiver("whsec-" + secrets.token_hex(16), fail_first=0)
    receiver.start()
    try:
        _play_day_and_compare(spawn, env, tmp_path, "kill9", kills_at_s=kills,
                              receiver=receiver)  # fmt: skip
    finally:
        receiver.stop()


def test_a_day_with_postgresql_stopped_for_8_s_ends_as_its_replay(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """Issue 8's fault, on the lifecycle: PostgreSQL stopped for 8 s (400 s of the day at
    50x) while the day plays. Ingest stops acknowledging, the broker holds the rest, and
    once the database is back the day ends with its replay's parcel events and states."""
    _play_day_and_compare(spawn, env, tmp_path, "pgdown", kills_at_s=(), pg_down=(20.0, 8.0))


def test_a_day_with_the_broker_restarted_ends_as_its_replay(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """Issue 8's fault, on the lifecycle: Mosquitto stopped for 3 s (150 s of the day at
    50x) and started again while the day plays. The vans keep what they could not send
    and flush it, in order, once they are back (simulators.live.VanLink); ingest's session
    and its queue survive in the broker's persistence; the day ends as its replay."""
    stats = _play_day_and_compare(spawn, env, tmp_path, "broker", kills_at_s=(),
                                  broker_down=(20.0, 3.0))  # fmt: skip
    assert stats.reconnects >= DAY_50X.vans and stats.retried > 0, stats  # all were cut off


def test_the_vans_give_up_what_the_broker_never_takes_after_the_flush_time(
    env: dict[str, str],
) -> None:
    """The broker stopped for good just before the day's end: ``run_day`` ends ``flush_s``
    after its last message, and counts what the vans still hold as failed (not published,
    not lost in silence)."""
    cli = cli_with(env)
    day = make_day(DAY_50X, seed=FAULTS_DAY_SEED, start_us=time.time_ns() // 1000)
    passwords = {van: cli("devices", "add", van) for van in day.fixes}
    time.sleep(1.0)  # the broker reloads its password file on SIGHUP
    last_s = schedule(day)[-1][0]
    from_s = last_s - 4 * 50.0  # the day's last 4 s at 50x

    def cut() -> None:
        time.sleep(1.5)
        stack.stop_broker(STATE_DIR)

    chaos = threading.Thread(target=cut, daemon=True)
    chaos.start()
    t0 = time.monotonic()
    try:
        stats = asyncio.run(run_day(day, host="127.0.0.1", port=stack.MQTT_PORT,
                                    passwords=passwords, from_s=from_s, speedup=50.0,
                                    flush_s=2.0))  # fmt: skip
    finally:
        chaos.join(10)
        stack.start_broker(STATE_DIR)
    took = time.monotonic() - t0
    total = len(schedule(day, from_s))
    assert stats.failed > 0 and stats.published + stats.failed == total, (stats, total)
    assert 4.0 + 2.0 <= took < 4.0 + 2.0 + 5.0, took  # the day, the flush time, a margin


def _play_day_and_compare(spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
                          name: str, kills_at_s: Sequence[float],
                          receiver: Receiver | None = None,
                          pg_down: tuple[float, float] | None = None,
                          broker_down: tuple[float, float] | None = None
                          ) -> LiveStats:  # fmt: skip
    with scratch_database(f"milepost_{name}") as url, psycopg.connect(url, autocommit=True) as db:
        extra = {"MILEPOST_DATABASE_URL": url,
                 "MILEPOST_MQTT_CLIENT_ID": f"milepost-{name}-{secrets.token_hex(3)}"}
        run_env = {**env, **extra}
        ing = spawn("ingest", extra_env=extra)
        ing.wait_for("subscribed to")
        seed = FAULTS_DAY_SEED
        from_s = make_day(DAY_50X, seed=seed, start_us=0).first_departure_s() - 60.0
        day = make_day(DAY_50X, seed=seed, start_us=time.time_ns() // 1000 - round(from_s * 1e6))
        doc = {**day.manifest, "gates": []}
        plan = tmp_path / "day.json"
        plan.write_bytes(orjson.dumps(doc))

        cli = cli_with(run_env)
        passwords = {van: cli("devices", "add", van) for van in day.fixes}
        cli("manifest", "load", str(plan))
        # the day starts with its plan: loaded on the manifest's notification, well before
        # the reload every 5 s would have
        ing.wait_for(f"plan: {len(doc['parcels'])} parcels", timeout=2.5)
        procs = [ing]
        if receiver is not None:  # a customer subscribes to every parcel of the day
            port = free_port()
            api_env = {**extra, "MILEPOST_API_ADDR": f"127.0.0.1:{port}"}
            procs.append(spawn("api", extra_env=api_env))
            procs[-1].wait_for("Uvicorn running")
            key = cli("keys", "create", "--role", "customer")
            hook = {"url": receiver.url, "events": ["parcel.status", "exception"],
                    "secret": receiver.secret.decode(),
                    "tracking_numbers": [p["tracking_number"] for p in doc["parcels"]]}
            r = httpx.post(f"http://127.0.0.1:{port}/v1/webhooks", json=hook,
                           headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 201, r.text
            procs.append(procs.pop(0))  # the ingest is the one the killer kills
        messages = schedule(day, from_s)
        done = threading.Event()
        restarts: list[Proc] = []

        def killer() -> None:
            t0 = time.monotonic()
            for outage, stop, start in ((pg_down, stack.stop_postgres, stack.start_postgres),
                                        (broker_down, stack.stop_broker, stack.start_broker)):
                if outage is not None:
                    at, outage_s = outage
                    if done.wait(max(0.0, t0 + at - time.monotonic())):
                        return
                    stop(STATE_DIR)
                    try:
                        time.sleep(outage_s)
                    finally:
                        start(STATE_DIR)
            for at in kills_at_s:
                if done.wait(max(0.0, t0 + at - time.monotonic())):
                    return
                procs[-1].proc.kill()
                procs[-1].proc.wait(10)
                procs.append(spawn("ingest", extra_env=extra))
                procs[-1].wait_for("subscribed to")
                restarts.append(procs[-1])

        chaos = threading.Thread(target=killer, daemon=True)
        chaos.start()
        try:
            stats = asyncio.run(run_day(day, host="127.0.0.1", port=stack.MQTT_PORT,
                                        passwords=passwords, from_s=from_s, speedup=50.0))
        finally:
            done.set()
            chaos.join(30)
        assert (stats.published, stats.failed) == (len(messages), 0)
        # every kill came while the day played
        assert len(procs) == 1 + len(kills_at_s) + (receiver is not None)
        # the killed ingests ended by SIGKILL, nothing else ended
        ends = [p.proc.poll() for p in procs]
        assert sorted(ends, key=str) == [-9] * len(kills_at_s) + [None] * (len(ends)
                                                                        - len(kills_at_s)), ends
        if pg_down is not None:  # the outage ended the test's own session too
            db.close()
            db = psycopg.connect(url, autocommit=True)

        def events() -> list[tuple[str, str, str, str | None]]:
            return [(r[0], r[1], r[2] or "", r[3]) for r in db.execute(
                "SELECT tracking_number, status, sub_status, vehicle_id FROM parcel_event"
                " ORDER BY time, tracking_number, status, sub_status")]

        seen: list[object] = []

        def settled() -> bool:  # nothing new for 3 s, after the last fix was stored
            now = events()
            seen.append(now)
            return (count(db, "SELECT count(*) FROM gps_fix") == stats.fixes
                    and len(seen) > 6 and seen[-7] == now)  # fmt: skip

        wait_until(settled, timeout=60, what="the day's last events")
        played_us = day.start_us + round(from_s * 1e6)  # what the live run was given
        ref = replay(pipeline_for(parse_manifest(doc)), start_us=day.start_us,
                     end_us=day.start_us + round((messages[-1][0] + 1.0) * 1e6),
                     fixes={v: a[a["ts_us"] >= played_us] for v, a in day.fixes.items()},
                     cargo=[m for m in day.cargo if m[1].ts_us >= played_us],
                     sensors=[m for m in day.sensors if m[1].ts_us >= played_us],
                     pods=[m for m in day.pods if m[1].ts_us >= played_us],
                     batch_s=1.0)  # fmt: skip
        want_final = {r[0]: (r[2], r[3] or "", r[4]) for r in ref.rows["parcel_latest"]}
        got_final = {r[0]: (r[1], r[2] or "", r[3]) for r in db.execute(
            "SELECT tracking_number, status, sub_status, vehicle_id FROM parcel_latest")}
        assert got_final == want_final
        # and the vans' stop visits: a crash does not make a van inside a stop enter it
        # again, nor restart its dwell (the geofence tracker's state is in ingest_state)
        want_visits = sorted((g[1], g[2], g[3], g[0]) for g in ref.rows["geofence"])
        got_visits = sorted(tuple(r) for r in db.execute(
            "SELECT vehicle_id, stop_id, kind, time FROM geofence_event"))
        assert got_visits == want_visits
        want = sorted((e[2], e[3], e[4] or "", e[5]) for e in ref.rows["parcel_event"])
        assert sorted(events()) == want
        # and they are the day's planted faults, found by the vans' cargo readers
        assert {(e[0], e[2]) for e in want if e[1] == "Exception"} == day.truth.exception_pairs()
        assert {e[0] for e in want if e[1] == "AttemptFail"} == day.truth.attempts
        if receiver is not None:  # each of those events reached the receiver, by its id
            stored = db.execute("SELECT event_id, status FROM parcel_event").fetchall()
            ids = {str(type_event_id(eid, t)) for eid, status in stored
                   for t in ("parcel.status", "exception")
                   if t == "parcel.status" or status == "Exception"}  # fmt: skip
            wait_until(lambda: set(receiver.events) >= ids, timeout=30,
                       what="every event at the receiver")  # fmt: skip
            time.sleep(1.0)
            assert set(receiver.events) == ids and receiver.bad_signatures == 0
        for p in restarts:  # each went on from what the ETA estimator had learned
            assert f"etas: restored {DAY_50X.vans} vans" in p.text(), p.text()
            assert "cannot restore" not in p.text(), p.text()
        for p in procs:
            p.stop()
        forget_session(extra["MILEPOST_MQTT_CLIENT_ID"])
        db.close()
    return stats
