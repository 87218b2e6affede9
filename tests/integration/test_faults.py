"""At least once from the broker, exactly once in the table: PostgreSQL stopped, and
Mosquitto restarted, in the middle of a stream. (``kill -9`` of ingest is in
``test_delivery.py``.)

Each test runs its own ``milepost ingest`` (its own client id, so its own persistent
session) writing into a database of this module alone: every ingest that other tests
started is subscribed to the same topics and would otherwise store the same fixes, and
hide a loss. A van publishes fixes numbered by ``seq`` and records which publishes the
broker acknowledged (PUBACK); in the end the stored seqs must be exactly those, each once.

The services are the shared local stack: every test puts them back in a ``finally``.
The session's own ingest and API processes run through all these outages, and must
work again at the end of the module, for the modules that follow.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.serial import RELOAD_S
from milepost import stack
from tests.integration.conftest import (
    STATE_DIR,
    Proc,
    forget_session,
    scratch_database,
    wait_until,
)

RECEIVE_MAXIMUM = 1000  # unacknowledged messages ingest lets the broker have in flight to it
T0_US = 1_790_000_000_000_000  # 2026-09-21: fix seq k is at T0 + k seconds
STATS_RE = re.compile(r"received (\d+) msgs")


class Van:
    """Publishes one fix per QoS 1 message and keeps the broker's acknowledgements.

    paho keeps every message without a PUBACK and sends it again after a reconnect, as a
    device would; a message whose PUBACK was lost with the connection may reach the
    broker twice, and must still be stored once.
    """

    def __init__(self, vehicle: str, password: str) -> None:
        self.vehicle = vehicle
        self.topic = f"fleet/{vehicle}/gps"
        self.connects = 0
        self._sent: list[tuple[int, int]] = []  # (seq, mid); fewer than 65,536: no wrap
        self._acked_mids: set[int] = set()  # filled by paho's network thread
        self._connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"van-{vehicle}", protocol=mqtt.MQTTv311
        )
        c.username_pw_set(vehicle, password)
        c.reconnect_delay_set(min_delay=1, max_delay=1)
        c.max_inflight_messages_set(RECEIVE_MAXIMUM)
        c.max_queued_messages_set(0)  # unbounded: the van buffers while the broker is away
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        self._client = c

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if not reason.is_failure:
            self.connects += 1
            self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, _r: object, _p: object) -> None:
        self._acked_mids.add(mid)

    def __enter__(self) -> Van:
        self._client.connect_async("127.0.0.1", stack.MQTT_PORT, keepalive=10)
        self._client.loop_start()  # a thread that reconnects by itself
        assert self._connected.wait(10), f"{self.vehicle} could not connect to the broker"
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, seqs: range) -> None:
        for seq in seqs:
            self.send(
                seq,
                self.topic,
                orjson.dumps(
                    {
                        "ts": (T0_US + seq * 1_000_000) / 1e6,
                        "lat": 52.5,
                        "lon": 13.4 + seq * 1e-6,
                        "seq": seq,
                    }
                ),
            )

    def send(self, seq: int, topic: str, payload: bytes) -> None:
        # while the broker is away rc is MQTT_ERR_NO_CONN and paho keeps the message
        info = self._client.publish(topic, payload, qos=1)
        self._sent.append((seq, info.mid))

    def stream(self, seqs: range, per_s: float, chunk: int = 50) -> threading.Thread:
        """Publish ``seqs`` at about ``per_s`` fixes a second, in the background."""

        def run() -> None:
            start = time.monotonic()
            for k in range(0, len(seqs), chunk):
                self.publish(seqs[k : k + chunk])
                time.sleep(max(0.0, start + (k + chunk) / per_s - time.monotonic()))

        thread = threading.Thread(target=run, name=f"stream-{self.vehicle}", daemon=True)
        thread.start()
        return thread

    def acked(self) -> set[int]:
        """The seqs whose publish the broker acknowledged."""
        return {seq for seq, mid in list(self._sent) if mid in self._acked_mids}

    def wait_all_acked(self, timeout: float) -> set[int]:
        what = f"PUBACKs for all {len(self._sent)} publishes of {self.vehicle}"
        wait_until(lambda: len(self.acked()) == len(self._sent), timeout=timeout, what=what)
        return self.acked()


def stored_seqs(database_url: str, vehicle: str) -> list[int]:
    """Every stored seq of the vehicle, duplicates included."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM gps_fix WHERE vehicle_id = %s ORDER BY seq", (vehicle,)
            )
        ]


def assert_exactly_once(database_url: str, van: Van, expected: set[int]) -> None:
    """Wait for every expected seq, give late redeliveries a moment, then compare exactly."""
    wait_until(
        lambda: len(set(stored_seqs(database_url, van.vehicle))) >= len(expected),
        timeout=30,
        what=f"{len(expected)} fixes of {van.vehicle}",
    )
    time.sleep(1.0)  # anything redelivered late would show up now
    seqs = stored_seqs(database_url, van.vehicle)
    assert len(seqs) == len(set(seqs)), f"{len(seqs) - len(set(seqs))} fixes stored twice"
    missing, extra = sorted(expected - set(seqs)), sorted(set(seqs) - expected)
    assert not missing, f"{len(missing)} acknowledged fixes lost, e.g. {missing[:10]}"
    assert not extra, f"{len(extra)} fixes stored that were never published, e.g. {extra[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dead_letter WHERE source LIKE %s", (f"%/{van.vehicle}/%",)
        ).fetchone()
    assert row == (0,), "fixes of the van went to dead_letter"


def received(proc: Proc) -> int:
    """Messages ingest has read from the broker, from its last stats line."""
    found = STATS_RE.findall(proc.text())
    return int(found[-1]) if found else 0


def log_warnings(proc: Proc) -> list[str]:
    return [line for line in proc.text().splitlines() if " WARNING " in line or " ERROR " in line]


@pytest.fixture(scope="module")
def fault_db(local_stack: stack.StackInfo) -> Iterator[str]:
    """A database that only this module's ingest processes write to."""
    with scratch_database("milepost_faults") as url:
        yield url


@pytest.fixture()
def own_ingest(spawn: Callable[..., Proc], fault_db: str) -> Iterator[Callable[..., Proc]]:
    """Start ingest processes writing into ``fault_db``; each is stopped and its broker
    session removed after the test."""
    started: list[tuple[Proc, str]] = []

    def start(client_id: str) -> Proc:
        proc = spawn(
            "ingest",
            extra_env={"MILEPOST_MQTT_CLIENT_ID": client_id, "MILEPOST_DATABASE_URL": fault_db},
        )
        started.append((proc, client_id))
        proc.wait_for("subscribed to")
        return proc

    yield start
    for proc, _ in started:
        proc.stop()
    for client_id in dict.fromkeys(cid for _, cid in started):
        forget_session(client_id)


def api_healthz(api_url: str) -> httpx.Response:
    return httpx.get(f"{api_url}/healthz", timeout=10)


def wait_api_healthy(api_url: str, in_a_row: int = 6) -> None:
    """Until ``in_a_row`` requests in a row succeed: the API's pool hands out its
    connections in turn, and each one that a database restart closed fails one request
    (see ``test_api_answers_the_first_request_after_a_database_restart``)."""
    deadline = time.monotonic() + 15
    ok = 0
    while ok < in_a_row:
        r = api_healthz(api_url)
        ok = ok + 1 if r.status_code == 200 else 0
        assert time.monotonic() < deadline, f"the API is not healthy: {r.text}"
        if not ok:
            time.sleep(0.1)


@pytest.fixture(scope="module", autouse=True)
def session_services(
    ingest: Proc, api_url: str, cli: Callable[..., str], database_url: str
) -> Iterator[None]:
    """The session's own ingest and API processes run through every outage of this
    module; afterwards both must work, for the modules that follow."""
    yield
    stack.start_postgres(STATE_DIR)  # no-ops when they run
    stack.start_broker(STATE_DIR)
    wait_api_healthy(api_url)
    vid = f"AFTER-{secrets.token_hex(3)}"
    with Van(vid, cli("devices", "add", vid)) as van:
        van.publish(range(1))
        van.wait_all_acked(10)
    wait_until(
        lambda: stored_seqs(database_url, vid) == [0] or ingest.proc.poll() is not None,
        timeout=30,
        what="the session's ingest storing a fix after the outages",
    )
    assert ingest.proc.poll() is None, f"the session's ingest exited:\n{ingest.text()[-3000:]}"


def test_postgres_stopped_mid_stream_loses_nothing_and_stores_nothing_twice(
    own_ingest: Callable[..., Proc],
    cli: Callable[..., str],
    fault_db: str,
) -> None:
    """PostgreSQL goes away for 4 s while fixes stream in at 1,000/s: ingest retries the
    same batch, stops reading (the broker holds the rest), and stores everything once
    when the database is back."""
    proc = own_ingest(f"milepost-fault-{secrets.token_hex(3)}")
    vid = f"PGDOWN-{secrets.token_hex(3)}"
    total, outage_s = 5000, 4.0
    with Van(vid, cli("devices", "add", vid)) as van:
        stream = van.stream(range(total), per_s=1000)
        wait_until(
            lambda: len(stored_seqs(fault_db, vid)) >= 500,
            what="some fixes stored before the outage",
        )
        warnings_before = len(log_warnings(proc))
        try:
            stack.stop_postgres(STATE_DIR)
            down = time.monotonic()
            read_at_stop, acked_at_stop = received(proc), len(van.acked())
            time.sleep(outage_s)
            read_while_down = received(proc) - read_at_stop
            acked_while_down = len(van.acked()) - acked_at_stop
            assert proc.proc.poll() is None, f"ingest exited:\n{proc.text()[-3000:]}"
        finally:
            stack.start_postgres(STATE_DIR)
        up = time.monotonic()
        stream.join(30)
        acked = van.wait_all_acked(30)
        assert acked == set(range(total)), "the broker did not acknowledge every publish"
        assert_exactly_once(fault_db, van, acked)
    all_stored_s = time.monotonic() - up - 1.0
    assert proc.proc.poll() is None, proc.text()
    # back-pressure: nothing commits, so ingest reads at most its receive window
    assert read_while_down <= RECEIVE_MAXIMUM, f"read {read_while_down} msgs with the db down"
    assert acked_while_down > RECEIVE_MAXIMUM, "too little was published during the outage"
    warnings = log_warnings(proc)[warnings_before:]
    print(
        f"\ndatabase down {up - down:.1f} s; ingest read {read_while_down} msgs meanwhile,"
        f" the broker took {acked_while_down}; all stored {all_stored_s:.1f} s after the"
        f" restart; {len(warnings)} warning lines:",
        *warnings,
        sep="\n  ",
    )
    # ingest says it at most once (with the pool's connection check, a short outage is
    # waited out inside the pool and ingest may say nothing); psycopg.pool logs each
    # reconnect attempt of each pooled connection, with exponential backoff
    own = [line for line in warnings if " ingest." in line]
    assert len(own) <= 2, "\n".join(warnings)
    assert len(warnings) <= 30, "\n".join(warnings)


def test_broker_restarted_mid_stream_loses_nothing_and_stores_nothing_twice(
    own_ingest: Callable[..., Proc],
    cli: Callable[..., str],
    fault_db: str,
) -> None:
    """Mosquitto is stopped (SIGTERM: it saves its persistence database) while ingest
    drains a backlog (frozen for the moment of the stop, with messages in flight to it)
    and fixes keep coming, and started again a second later. Ingest
    reconnects with backoff and resumes its session; the broker redelivers what was not
    acknowledged: still queued, in flight, or in a batch that had not committed."""
    client_id = f"milepost-fault-{secrets.token_hex(3)}"
    own_ingest(client_id).stop()  # the session exists: the broker queues for it
    vid = f"MQDOWN-{secrets.token_hex(3)}"
    backlog, total = 10_000, 12_000
    with (
        Van(vid, cli("devices", "add", vid)) as van,
        psycopg.connect(fault_db, autocommit=True) as db,
    ):

        def stored() -> int:
            row = db.execute(
                "SELECT count(*) FROM gps_fix WHERE vehicle_id = %s", (vid,)
            ).fetchone()
            return int(row[0]) if row else 0

        van.publish(range(backlog))
        van.wait_all_acked(30)
        proc = own_ingest(client_id)
        stream = van.stream(range(backlog, total), per_s=1000)
        deadline = time.monotonic() + 20
        while stored() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        # ingest drains 10,000 fixes in a fraction of a second, faster than Mosquitto
        # takes to shut down; frozen, it holds at most its receive window and the broker
        # goes down with the rest of the backlog still queued for the session
        try:
            os.kill(proc.proc.pid, signal.SIGSTOP)
            try:
                accepted = len(van.acked())
                stack.stop_broker(STATE_DIR)
            finally:
                os.kill(proc.proc.pid, signal.SIGCONT)
            down = time.monotonic()
            time.sleep(1.0)  # ingest commits what it holds; the rest is only in the broker
            only_in_broker = accepted - stored()
            stored_before = stored()
        finally:
            stack.start_broker(STATE_DIR)
        up = time.monotonic()
        stream.join(30)
        acked = van.wait_all_acked(30)
        assert acked == set(range(total)), "the broker did not acknowledge every publish"
        assert_exactly_once(fault_db, van, acked)
    all_stored_s = time.monotonic() - up - 1.0
    assert proc.proc.poll() is None, proc.text()
    assert only_in_broker > RECEIVE_MAXIMUM, "the broker went down too late to test anything"
    warnings = log_warnings(proc)
    duplicates = re.findall(r"duplicates (\d+)", proc.text())
    print(
        f"\nbroker down {up - down:.1f} s after its shutdown save; {only_in_broker} accepted"
        f" fixes were only in its persistence; {stored_before} stored before, of which"
        f" {duplicates[-1] if duplicates else '?'} were redelivered and deduplicated; all"
        f" stored {all_stored_s:.1f} s after the restart; van reconnected"
        f" {van.connects - 1}x; warning lines:",
        *warnings,
        sep="\n  ",
    )
    assert "broker connection restored" in proc.text()
    assert len([line for line in warnings if "broker unavailable" in line]) == 1, warnings
    assert len(warnings) <= 3, "\n".join(warnings)


def test_idle_ingest_survives_a_database_restart(
    own_ingest: Callable[..., Proc], cli: Callable[..., str], fault_db: str
) -> None:
    """Nothing arrives while PostgreSQL restarts; ingest's own periodic queries (the gate
    reload) then meet a pooled connection that the restart closed."""
    proc = own_ingest(f"milepost-fault-{secrets.token_hex(3)}")
    try:
        stack.stop_postgres(STATE_DIR)
        time.sleep(1.0)
    finally:
        stack.start_postgres(STATE_DIR)
    time.sleep(RELOAD_S + 1.0)
    assert proc.proc.poll() is None, f"ingest exited:\n{proc.text()[-3000:]}"
    vid = f"IDLE-{secrets.token_hex(3)}"
    with Van(vid, cli("devices", "add", vid)) as van:
        van.publish(range(1))
        van.wait_all_acked(10)
    wait_until(lambda: stored_seqs(fault_db, vid) == [0], what="a fix stored after the restart")


def test_api_answers_the_first_request_after_a_database_restart(
    api_url: str, cli: Callable[..., str]
) -> None:
    """The API's pools must not hand out a connection that the restart closed (psycopg_pool
    checks none by default: ``check=AsyncConnectionPool.check_connection`` does): the main
    pool (``/healthz``) and the parcel lookups' own (``GET /v1/parcels/{n}``)."""
    key = cli("keys", "create", "--role", "customer", "--name", "after-restart")
    parcel = f"{api_url}/v1/parcels/NOSUCH-{secrets.token_hex(4)}"

    def lookup() -> httpx.Response:
        return httpx.get(parcel, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    wait_api_healthy(api_url)  # the pool holds open connections, none closed yet
    assert lookup().status_code == 404  # the key checked, the number unknown
    try:
        stack.stop_postgres(STATE_DIR)
    finally:
        stack.start_postgres(STATE_DIR)
    try:
        r = api_healthz(api_url)
        assert r.status_code == 200, f"first request after the restart: {r.text}"
        r = lookup()
        assert r.status_code == 404, f"first lookup after the restart: {r.text}"
    finally:  # leave a working pool to the next tests, whatever happened here
        wait_api_healthy(api_url)


def test_owntracks_fix_right_after_a_database_restart_is_stored(
    own_ingest: Callable[..., Proc],
    cli: Callable[..., str],
    fault_db: str,
) -> None:
    """The first OwnTracks message reads the device registry from the database; that
    connection was closed by a restart a moment ago."""
    proc = own_ingest(f"milepost-fault-{secrets.token_hex(3)}")
    vid, device = f"OTDOWN-{secrets.token_hex(3)}", f"u{secrets.token_hex(3)}/phone"
    password = cli("devices", "add", vid, "--owntracks", device)  # broker account and ACL
    with psycopg.connect(fault_db, autocommit=True) as conn:  # the registry ingest reads
        conn.execute(
            "INSERT INTO vehicle (vehicle_id, owntracks_id) VALUES (%s, %s)", (vid, device)
        )
    try:
        stack.stop_postgres(STATE_DIR)
    finally:
        stack.start_postgres(STATE_DIR)
    with Van(vid, password) as van:
        van.send(
            0,
            f"owntracks/{device}",
            orjson.dumps(
                {"_type": "location", "tst": T0_US // 1_000_000, "lat": 52.5, "lon": 13.4}
            ),
        )
        van.wait_all_acked(10)
    wait_until(
        lambda: len(stored_seqs(fault_db, vid)) == 1 or proc.proc.poll() is not None,
        timeout=15,
        what="the OwnTracks fix stored",
    )
    assert proc.proc.poll() is None, f"ingest exited:\n{proc.text()[-3000:]}"
    assert len(stored_seqs(fault_db, vid)) == 1
