"""Fixtures for integration tests: the real local stack, a fresh database per test session,
and real ``milepost ingest`` / ``milepost api`` processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from milepost import stack
from milepost.db import migrate

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / "var"
ADMIN_URL = "postgresql://milepost@127.0.0.1:55432/postgres"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack() -> stack.StackInfo:
    """The local stack, started if it is not running (a no-op in seconds when it is)."""
    return stack.up(STATE_DIR, progress=lambda _msg: None)


@pytest.fixture(autouse=True)
def broker_alive(request: pytest.FixtureRequest) -> None:
    """Debian 12's Mosquitto (2.0.11) has been seen to die of a general protection fault
    under the crash tests' load (kernel log: ``mosquitto ... general protection fault ...
    in libc.so.6``). A broker that died during one test is started again before the next,
    so one crash fails one test instead of every test after it."""
    if "tests/integration/" not in str(request.node.fspath).replace(os.sep, "/"):
        return
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex(("127.0.0.1", stack.MQTT_PORT)) == 0:
            return
    sys.stderr.write("\nthe local Mosquitto was not running: starting it again\n")
    stack.start_broker(STATE_DIR)


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, migrated database on the local stack, dropped afterwards; yields its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://milepost@127.0.0.1:{stack.PG_PORT}/{name}"
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(local_stack: stack.StackInfo) -> Iterator[str]:
    with scratch_database("milepost_test") as url:
        yield url


@pytest.fixture()
def db(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


class Pty:
    """A pseudo-terminal whose slave is reachable through a stable symlink, like socat's link=."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1
        self.replug()

    def replug(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            os.close(self.slave)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        # remove the path first: the gate's reader keeps retrying it, and the kernel reuses
        # /dev/pts numbers, so a stale link would let it open another test's terminal
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture()
def pty(tmp_path: Path) -> Iterator[Pty]:
    p = Pty(tmp_path / "gate")
    yield p
    p.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path
    client_id: str | None = None  # an ingest's MQTT session, forgotten at teardown

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not seen within {timeout} s:\n{self.text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def env(database_url: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MILEPOST_")}
    e.update(
        MILEPOST_DATABASE_URL=database_url,
        MILEPOST_STATE_DIR=str(STATE_DIR),
        MILEPOST_MQTT_CLIENT_ID=f"milepost-test-{secrets.token_hex(4)}",
        MILEPOST_BATCH_MAX_MS="50",
        MILEPOST_STATS_INTERVAL_S="1",
        MILEPOST_WEBHOOK_ALLOW_PRIVATE="true",  # the tests' receivers listen on loopback
    )
    return e


@pytest.fixture(scope="session")
def spawn(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Callable[..., Proc]]:  # fmt: skip
    procs: list[Proc] = []
    logs = tmp_path_factory.mktemp("logs")

    def start(*args: str, extra_env: dict[str, str] | None = None) -> Proc:
        log = logs / f"{args[0]}-{len(procs)}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "milepost", *args], cwd=ROOT,
                                 env={**env, **(extra_env or {})}, stdout=out,
                                 stderr=subprocess.STDOUT)  # fmt: skip
        merged = {**env, **(extra_env or {})}
        proc = Proc(p, log, merged["MILEPOST_MQTT_CLIENT_ID"] if args[0] == "ingest" else None)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()
    for client_id in {p.client_id for p in procs if p.client_id}:
        forget_session(client_id)


def forget_session(client_id: str) -> None:
    """Remove a stopped ingest's persistent session from the broker: otherwise the broker
    queues every later fix for it for seven days (``persistent_client_expiration``)."""
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    user, password = stack.ingest_credentials(STATE_DIR)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", stack.MQTT_PORT, clean_start=True, properties=props)
    c.loop_start()
    try:
        wait_until(c.is_connected, timeout=10, what=f"a clean session for {client_id}")
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.fixture(scope="session")
def ingest(spawn: Callable[..., Proc]) -> Proc:
    proc = spawn("ingest")
    proc.wait_for("subscribed to")
    return proc


@pytest.fixture(scope="session")
def api_url(spawn: Callable[..., Proc]) -> str:
    port = free_port()
    proc = spawn("api", extra_env={"MILEPOST_API_ADDR": f"127.0.0.1:{port}"})
    proc.wait_for("Uvicorn running")
    return f"http://127.0.0.1:{port}"


def cli_with(env: dict[str, str]) -> Callable[..., str]:
    """``milepost ARGS...`` in ``env``; its stdout, stripped (it must succeed)."""

    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "milepost", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    return run


@pytest.fixture(scope="session")
def cli(env: dict[str, str]) -> Callable[..., str]:
    return cli_with(env)


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
