"""The fault rig: a database, a broker and milepost's processes of one run, and the
devices that feed them while they keep their own count of what was acknowledged.

* database: a fresh one on the local stack's PostgreSQL (migrated), dropped at the end;
* broker: a private Mosquitto (``benchmarks.broker.BenchBroker``: the stack's
  configuration, persistence on, an account per van) that can be restarted with its
  persistence kept;
* ``milepost ingest`` and ``milepost api`` as the user runs them (``python -m milepost``),
  in processes of their own, logs under ``var/log/faults-*.log``;
* vans: paho clients under their own accounts that publish numbered fixes at QoS 1 and
  record which messages the broker acknowledged (PUBACK); paho keeps the others and sends
  them again after a reconnect, as a device does;
* a dock-door reader on a pseudo-terminal, unpluggable, that counts the lines it wrote.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from benchmarks.broker import BenchBroker
from milepost import stack
from milepost.db import migrate

ROOT: Final = Path(__file__).resolve().parents[1]
# the local stack's state (MILEPOST_STATE_DIR, as for milepost itself; default var/)
STATE_DIR: Final = Path(os.environ.get("MILEPOST_STATE_DIR") or ROOT / "var").resolve()
LOG_DIR: Final = STATE_DIR / "log"
ADMIN_URL: Final = stack.DATABASE_URL
# a van's fix k is at T0 + k * step: two hours before the run, whole seconds (recent, as
# device times are: retention drops older chunks, and 25 hours ahead is refused)
T0_US: Final = (int(time.time()) - 7200) * 1_000_000


class RigError(RuntimeError):
    """A process did not start or a condition did not come true in time."""


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RigError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, ready: str, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n=== start {self.starts + 1} ===\n".encode())
            out.flush()
            offset = out.tell()
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.starts += 1
        wait_until(lambda: ready in self.log_since(offset) or not self.alive(), timeout,
                   f"{self.name} to say {ready!r} (see {self.log})")  # fmt: skip
        if not self.alive():
            raise RigError(f"{self.name} exited at start-up; see {self.log}")

    def log_since(self, offset: int = 0) -> str:
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ---------------------------------------------------------------- vans


class Van:
    """Publishes numbered fixes (``seq`` k at ``T0 + k * step_us`` plus the van's clock
    offset) and keeps the broker's acknowledgements."""

    def __init__(self, broker: BenchBroker, vehicle: str, step_us: int = 1_000_000,
                 clock_offset_us: int = 0) -> None:  # fmt: skip
        self.vehicle, self.step_us, self.offset_us = vehicle, step_us, clock_offset_us
        self.topic = f"fleet/{vehicle}/gps"
        self._lock = threading.Lock()
        self._sent: dict[int, list[int]] = {}  # mid -> seqs; fewer than 65,536 messages
        self._acked: set[int] = set()
        self.bad_sent = 0  # planted undecodable payloads, acknowledged or not
        self._connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fault-van-{vehicle}",
                        protocol=mqtt.MQTTv311, clean_session=False)  # fmt: skip
        c.username_pw_set(vehicle, broker.vans[vehicle])
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)  # unbounded: the van buffers while the broker is away
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.connect_async(broker.host, broker.port, keepalive=10)
        c.loop_start()
        self._client = c

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                    _p: Any) -> None:  # fmt: skip
        if not reason.is_failure:
            self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self._lock:
            self._acked.add(mid)

    def ts_us(self, seq: int) -> int:
        return T0_US + seq * self.step_us + self.offset_us

    def fix(self, seq: int) -> dict[str, Any]:
        return {"ts": self.ts_us(seq) / 1e6, "lat": 52.5 + (seq % 1000) * 1e-5,
                "lon": 13.4 + (seq % 777) * 1e-5, "speed": 8.0, "seq": seq}  # fmt: skip

    def publish(self, seqs: Sequence[int]) -> None:
        """One message: one fix, or an array of them (a device flushing its backlog)."""
        body = self.fix(seqs[0]) if len(seqs) == 1 else [self.fix(k) for k in seqs]
        # not under the lock: paho calls on_publish holding its own, which publish takes
        # too; a PUBACK may come before the mid is recorded here, acked_seqs joins later
        info = self._client.publish(self.topic, orjson.dumps(body), qos=1)
        with self._lock:
            self._sent[info.mid] = list(seqs)

    def publish_bad(self) -> None:
        """A payload ingest must store in dead_letter with its reason."""
        self.bad_sent += 1  # each one its own bytes, so a redelivered one is told apart
        self._client.publish(self.topic, b'{"ts": "not a time %d", "lat": 91}' % self.bad_sent,
                             qos=1)  # fmt: skip

    def wait_connected(self, timeout: float = 20.0) -> None:
        if not self._connected.wait(timeout):
            raise RigError(f"{self.vehicle} did not connect to the broker")

    def acked_seqs(self) -> set[int]:
        with self._lock:
            return {k for mid in self._acked if mid in self._sent for k in self._sent[mid]}

    def sent_seqs(self) -> set[int]:
        with self._lock:
            return {k for seqs in self._sent.values() for k in seqs}

    def all_acked(self) -> bool:
        with self._lock:
            return set(self._sent) <= self._acked

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# ---------------------------------------------------------------- a gate


class PtyGate:
    """A dock-door reader in ASCII mode on a pseudo-terminal behind a stable path: lines
    written while plugged in are counted; ``unplug`` takes the terminal away."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1
        self.lines_written = 0
        self.garbage_written = 0
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        if self.master >= 0:
            os.close(self.master)
            os.close(self.slave)
        self.master = self.slave = -1

    def read_line(self, epc: str, antenna: int = 1) -> None:
        os.write(self.master, f"{epc},{antenna}\r\n".encode())
        self.lines_written += 1

    def garbage(self, n: int) -> None:
        os.write(self.master, secrets.token_bytes(n).replace(b"\r", b"").replace(b"\n", b"")
                 + b"\r\n")  # fmt: skip
        self.garbage_written += 1


# ---------------------------------------------------------------- the rig


@dataclass
class Rig:
    db_name: str
    db_url: str
    broker: BenchBroker
    ingest: Proc
    api: Proc
    api_url: str
    vans: list[str]
    client_id: str
    gate_link: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def stored_seqs(self, van: Van) -> tuple[set[int], int]:
        """The van's stored fixes (by their device time) and the number of rows."""
        rows = self.sql("SELECT (extract(epoch FROM coalesce(device_time, time)) * 1e6)::bigint"
                        " FROM gps_fix WHERE vehicle_id = %s", van.vehicle)  # fmt: skip
        seqs = {round((us - T0_US - van.offset_us) / van.step_us) for (us,) in rows}
        return seqs, len(rows)

    def dead_letters(self, van: Van) -> tuple[int, int]:
        """Distinct payloads in dead_letter from ``van``, and rows beyond one each (a bad
        message the broker delivered again after a restart is stored again: at least once)."""
        distinct, rows = self.sql("SELECT count(DISTINCT payload), count(*) FROM dead_letter"
                                  " WHERE source = %s", van.topic)[0]  # fmt: skip
        return int(distinct), int(rows) - int(distinct)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def rig(name: str, vans: int, gate: bool = False) -> Iterator[Rig]:
    stack.up(STATE_DIR, progress=lambda _m: None)  # provisions once, then no-ops
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(3)
    db_name = f"milepost_faults_{name}_{tag}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"postgresql://milepost@127.0.0.1:{stack.PG_PORT}/{db_name}"
    ids = [f"F{tag.upper()}-VAN-{i:02d}" for i in range(vans)]
    broker = BenchBroker.start(ids)
    client_id = f"milepost-faults-{tag}"
    api_port = _free_port()
    user, password = broker.ingest
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILEPOST_")}
    env.update(MILEPOST_DATABASE_URL=db_url, MILEPOST_STATE_DIR=str(STATE_DIR),
               MILEPOST_MQTT_URL=f"mqtt://{user}:{password}@{broker.host}:{broker.port}",
               MILEPOST_MQTT_CLIENT_ID=client_id, MILEPOST_BATCH_MAX_MS="100",
               MILEPOST_STATS_INTERVAL_S="2", MILEPOST_API_ADDR=f"127.0.0.1:{api_port}",
               MILEPOST_RATE_LIMIT_PER_S="0")  # fmt: skip
    py = [sys.executable, "-m", "milepost"]
    ingest = Proc("ingest", [*py, "ingest"], env, LOG_DIR / f"faults-{name}-ingest.log")
    api = Proc("api", [*py, "api"], env, LOG_DIR / f"faults-{name}-api.log")
    for p in (ingest, api):
        p.log.write_bytes(b"")
    r = Rig(db_name, db_url, broker, ingest, api, f"http://127.0.0.1:{api_port}", ids,
            client_id)  # fmt: skip
    try:
        migrate(db_url)
        if gate:
            r.gate_link = STATE_DIR / "faults" / f"gate-{tag}"
            r.gate_link.parent.mkdir(parents=True, exist_ok=True)
        ingest.start("subscribed to")
        api.start("Uvicorn running")
        yield r
    finally:
        for p in (ingest, api):
            p.stop()
        broker.stop()
        with contextlib.suppress(psycopg.Error), psycopg.connect(ADMIN_URL,
                                                                 autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
