"""A private Mosquitto for one benchmark run, and the bare paho clients the suite needs.

Why not the stack's broker: it keeps every persistent session that tests, demos and
earlier runs left behind (``milepost-ingest`` among them, with a 7-day expiry), each
subscribed to ``fleet/+/gps``. Every benchmark message would be queued into each of
them, which costs the broker work we would then measure, and the next
``milepost ingest`` would store the benchmark's fixes in the real database. So each run
starts its own broker on a free 127.0.0.1 port, with the configuration that
``milepost stack`` renders (same persistence, queue and in-flight limits, same
password file and ACL checks on every message), and throws it away at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from milepost import stack

SESSION_EXPIRY_S = 3600
RECEIVE_MAXIMUM = 1000  # what milepost ingest announces; bare subscribers announce the same
TOPIC_FILTER = "fleet/+/gps"

Progress = list[tuple[float, int]]  # (perf_counter time, messages or rows so far)


class BrokerError(RuntimeError):
    """The private broker did not start, or a client did not get through in time."""


@dataclass
class BenchBroker:
    host: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    ingest: tuple[str, str]  # the ingester's account (reads everything)
    vans: dict[str, str]  # vehicle id -> password; each may publish under fleet/<id>/#
    tls_port: int | None = None  # a second listener, with TLS, when started with a certificate

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @classmethod
    def start(cls, vehicles: Sequence[str], timeout_s: float = 10.0,
              tls: tuple[Path, Path] | None = None) -> BenchBroker:  # fmt: skip
        """A broker with an account per vehicle; with ``tls`` (certificate, key; PEM) also a
        TLS listener on another free port."""
        host = stack.HOST  # 127.0.0.1: nothing leaves the machine
        port = _free_port(host)
        root = Path(tempfile.mkdtemp(prefix="milepost-bench-broker-"))
        mqtt_dir = root / "mqtt"
        (mqtt_dir / "data").mkdir(parents=True)
        tls_port = None
        if tls is not None:
            (mqtt_dir / "tls").mkdir()
            for source, name in zip(tls, ("cert.pem", "key.pem"), strict=True):
                shutil.copyfile(source, mqtt_dir / "tls" / name)
            tls_port = _free_port(host)
        run_user = _run_user()
        ingest = (stack.INGEST_USER, secrets.token_urlsafe(18))
        vans = {v: secrets.token_urlsafe(12) for v in vehicles}
        conf = stack.render_mosquitto_conf(root, run_user.pw_name, tls_port).replace(
            f"listener {stack.MQTT_PORT} {stack.HOST}", f"listener {port} {host}"
        )
        if f"listener {port} {host}" not in conf:
            raise BrokerError("cannot find the listener line in the rendered mosquitto.conf")
        (mqtt_dir / "mosquitto.conf").write_text(conf)
        (mqtt_dir / "acl").write_text(stack.render_acl({v: [] for v in vans}, ingest[0]))
        passwd = mqtt_dir / "passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in [ingest, *vans.items()]))
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True,
                       capture_output=True, timeout=30)  # fmt: skip
        os.chmod(root, 0o755)
        for path in [root, *root.rglob("*")]:
            os.chown(path, run_user.pw_uid, run_user.pw_gid)
            if path.is_file():
                os.chmod(path, 0o600 if path.name in ("passwd", "acl", "key.pem") else 0o644)
        broker = cls(host, port, root, _spawn(mqtt_dir), ingest, vans, tls_port)
        broker._wait_up(timeout_s)
        return broker

    def restart(self, down_s: float = 0.0, timeout_s: float = 10.0) -> None:
        """Stop the broker as a service manager does (it saves its persistence file on the
        way out), wait ``down_s``, and start it again on the same port and files."""
        self.proc.terminate()
        self.proc.wait(15)
        if self.proc.stderr:
            self.proc.stderr.close()
        time.sleep(down_s)
        self.proc = _spawn(self.root / "mqtt")
        self._wait_up(timeout_s)

    def _wait_up(self, timeout_s: float) -> None:
        host, port, tls_port, proc, mqtt_dir = (self.host, self.port, self.tls_port, self.proc,
                                                self.root / "mqtt")  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2), \
                    socket.create_connection((host, tls_port or port), 0.2):  # fmt: skip
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.stop()
                log = mqtt_dir / "mosquitto.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BrokerError(f"private mosquitto did not start: {err}{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _spawn(mqtt_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["mosquitto", "-c", str(mqtt_dir / "mosquitto.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_user() -> pwd.struct_passwd:
    """Mosquitto drops root privileges to this user, as the stack's broker does."""
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam("mosquitto")
    return pwd.getpwuid(os.geteuid())


# ---------------------------------------------------------------- paho helpers


def connect_props(session_expiry_s: int = SESSION_EXPIRY_S) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


class _Waiter:
    """Counts a paho callback from the network thread; the caller waits for a total."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.failed: str | None = None

    def add(self, n: int = 1) -> None:
        with self._cond:
            self.count += n
            self._cond.notify_all()

    def fail(self, why: str) -> None:
        with self._cond:
            self.failed = why
            self._cond.notify_all()

    def wait_for(self, total: int, timeout_s: float, what: str) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.count >= total or self.failed is not None,
                                     timeout_s)  # fmt: skip
        if self.failed is not None:
            raise BrokerError(f"{what}: {self.failed}")
        if not ok:
            raise BrokerError(f"{what}: {self.count} of {total} within {timeout_s:.0f} s")


def _client(client_id: str, user: str, password: str) -> tuple[paho.Client, _Waiter, _Waiter]:
    """A started paho v5 client and waiters for its CONNACK and its PUBACK/SUBACKs."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    c.username_pw_set(user, password)
    c.max_inflight_messages_set(RECEIVE_MAXIMUM)
    connected, acked = _Waiter(), _Waiter()

    def on_connect(_c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            connected.fail(f"CONNACK {rc}")
        else:
            connected.add()

    c.on_connect = on_connect
    c.on_publish = lambda _c, _u, _mid, _rc, _p: acked.add()
    c.on_subscribe = lambda _c, _u, _mid, _rcs, _p: acked.add()
    return c, connected, acked


def open_session(broker: BenchBroker, client_id: str) -> None:
    """Create a persistent QoS 1 session on ``fleet/+/gps`` and leave, so the broker queues."""
    c, connected, acked = _client(client_id, *broker.ingest)
    c.connect(broker.host, broker.port, clean_start=True, properties=connect_props())
    c.loop_start()
    try:
        connected.wait_for(1, 10, f"connect {client_id}")
        c.subscribe(TOPIC_FILTER, qos=1)
        acked.wait_for(1, 10, f"subscribe {client_id}")
    finally:
        c.disconnect()
        c.loop_stop()


def discard_session(broker: BenchBroker, client_id: str) -> None:
    """Drop a session (clean start, expiry 0), so it stops queueing later phases' messages."""
    c, connected, _ = _client(client_id, *broker.ingest)
    c.connect(broker.host, broker.port, clean_start=True, properties=connect_props(0))
    c.loop_start()
    try:
        connected.wait_for(1, 10, f"discard {client_id}")
    finally:
        c.disconnect()
        c.loop_stop()


class Publishers:
    """One paho client per vehicle, each publishing on its own topic at QoS 1.

    Takes plain values, not a BenchBroker, so a child process can build one."""

    def __init__(self, host: str, port: int, vans: dict[str, str]) -> None:
        tag = secrets.token_hex(3)
        self._clients: dict[str, paho.Client] = {}
        self._acked = _Waiter()
        self.published = 0
        waiters = []
        for v, password in vans.items():
            c, connected, _ = _client(f"bench-pub-{v}-{tag}", v, password)
            c.on_publish = lambda _c, _u, _mid, _rc, _p: self._acked.add()
            c.connect(host, port, clean_start=True, properties=connect_props(0))
            c.loop_start()
            self._clients[v] = c
            waiters.append(connected)
        for w in waiters:
            w.wait_for(1, 10, "publisher connect")

    def publish(self, vehicle: str, payload: bytes) -> None:
        info = self._clients[vehicle].publish(f"fleet/{vehicle}/gps", payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerError(f"publish for {vehicle} failed: {paho.error_string(info.rc)}")
        self.published += 1

    def wait_acked(self, timeout_s: float) -> None:
        """Wait until the broker acknowledged (and so queued) everything published."""
        self._acked.wait_for(self.published, timeout_s, "PUBACKs")

    def close(self) -> None:
        for c in self._clients.values():
            c.disconnect()
            c.loop_stop()


class LinePublishers:
    """One ``mosquitto_pub -l`` (the broker project's own C client) per vehicle, each
    publishing every line written to its stdin as one QoS 1 message on its own topic,
    with up to ``max_inflight`` unacknowledged.

    For load at a paced rate: a Python publisher costs this 2-core machine as much CPU as
    the ingest it loads (paho: ~3,000 messages/s a process before its own queue grows),
    so its backlog, not milepost's, would be measured. Here the pacing loop only writes
    lines to pipes. Payloads must not contain a newline (JSON from gps_json.encode has
    none)."""

    def __init__(self, host: str, port: int, vans: dict[str, str],
                 max_inflight: int = 1000) -> None:  # fmt: skip
        exe = shutil.which("mosquitto_pub")
        if exe is None:
            raise BrokerError("mosquitto_pub not found (Debian package mosquitto-clients)")
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        tag = secrets.token_hex(3)
        for v, password in vans.items():
            self._procs[v] = subprocess.Popen(
                [exe, "-h", host, "-p", str(port), "-u", v, "-P", password, "-q", "1",
                 "-M", str(max_inflight), "-i", f"bench-line-{v}-{tag}",
                 "-t", f"fleet/{v}/gps", "-l"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                bufsize=0)  # fmt: skip
        self.published = 0

    def publish(self, vehicle: str, payload: bytes) -> None:
        proc = self._procs[vehicle]
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload + b"\n")
        except BrokenPipeError:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BrokerError(f"mosquitto_pub for {vehicle} exited: {err.strip()}") from None
        self.published += 1

    def close(self, timeout_s: float = 30.0) -> None:
        """End every input; each client exits once its messages are acknowledged."""
        for proc in self._procs.values():
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        deadline = time.monotonic() + timeout_s
        for v, proc in self._procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BrokerError(f"mosquitto_pub for {v} did not finish in time") from None


def publish_backlog(broker: BenchBroker, payloads: dict[str, list[bytes]],
                    timeout_s: float) -> float:  # fmt: skip
    """Publish every vehicle's payloads, interleaved across vehicles; seconds until all
    were acknowledged by the broker."""
    pubs = Publishers(broker.host, broker.port, {v: broker.vans[v] for v in payloads})
    try:
        t0 = time.perf_counter()
        longest = max(len(p) for p in payloads.values())
        for i in range(longest):
            for v, msgs in payloads.items():
                if i < len(msgs):
                    pubs.publish(v, msgs[i])
        pubs.wait_acked(timeout_s)
        return time.perf_counter() - t0
    finally:
        pubs.close()


def paho_drain(broker: BenchBroker, client_id: str, messages: int,
               timeout_s: float) -> Progress:  # fmt: skip
    """A bare paho subscriber that only counts: resume the session and take ``messages``
    QoS 1 messages (acknowledged by paho as they arrive). Progress from connect on."""
    c, connected, _ = _client(client_id, *broker.ingest)
    marks: Progress = []
    step = max(1, messages // 100)
    n = 0
    done = threading.Event()

    def on_message(_c: paho.Client, _u: Any, _m: paho.MQTTMessage) -> None:
        nonlocal n
        n += 1
        if n % step == 0 or n == messages:
            marks.append((time.perf_counter(), n))
            if n >= messages:
                done.set()

    c.on_message = on_message
    marks.append((time.perf_counter(), 0))
    c.connect(broker.host, broker.port, clean_start=False, properties=connect_props())
    c.loop_start()
    try:
        connected.wait_for(1, 10, f"connect {client_id}")
        if not done.wait(timeout_s):
            raise BrokerError(f"bare paho subscriber got {n} of {messages} in {timeout_s:.0f} s")
    finally:
        c.disconnect()
        c.loop_stop()
    return marks
