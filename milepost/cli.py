"""The ``milepost`` command line: one entry point for every part of the system."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import click

from milepost.db import migrate as migrate_schema
from milepost.settings import Settings, SettingsError, load_settings

log = logging.getLogger("milepost")
T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings()
        except SettingsError as exc:
            raise click.ClickException(f"configuration: {exc}") from exc
    s: Settings = obj["settings"]
    return s


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # paho logs every packet at DEBUG and aiomqtt mirrors it: keep them at WARNING
    logging.getLogger("mqtt").setLevel(logging.WARNING)


def _stderr(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.pass_context
def main(ctx: click.Context) -> None:
    """milepost: fleet GPS and RFID telemetry for last-mile parcel delivery.

    Settings come from MILEPOST_* environment variables and an optional milepost.toml
    (MILEPOST_DATABASE_URL, MILEPOST_MQTT_URL, MILEPOST_API_ADDR, MILEPOST_STATE_DIR, ...);
    the defaults point at the local stack that `milepost stack up` runs under var/.
    """
    ctx.ensure_object(dict)


# ------------------------------------------------------------------ stack


@main.group()
def stack() -> None:
    """The local TimescaleDB and Mosquitto under var/ (ports 55432 and 18830)."""


@stack.command("up")
@click.pass_context
def stack_up(ctx: click.Context) -> None:
    """Install what is missing, build TimescaleDB if needed, start both services."""
    from milepost import stack as st

    s = _settings(ctx)
    try:
        tls = (s.mqtt_tls_cert, s.mqtt_tls_key) if s.mqtt_tls_cert and s.mqtt_tls_key else None
        info = st.up(s.state_dir, progress=_stderr, mqtt_tls=tls)
    except st.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    _stderr(f"stack is up: database {info.database_url}, broker {info.mqtt_url}"
            + (f" (and mqtts://{st.HOST}:{st.MQTT_TLS_PORT})" if tls else ""))  # fmt: skip


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the services that `stack up` started (and nothing else)."""
    from milepost import stack as st

    st.down(_settings(ctx).state_dir)


@stack.command("status")
@click.pass_context
def stack_status(ctx: click.Context) -> None:
    """Say what runs where."""
    from milepost import stack as st

    click.echo(st.status(_settings(ctx).state_dir))


# ------------------------------------------------------------------ schema, keys, devices


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the schema migrations that are not applied yet."""
    from milepost.db import migrate as run_migrate
    from milepost.db import schema_version

    s = _settings(ctx)
    applied = _db_call(run_migrate, s.database_url)
    version = _db_call(schema_version, s.database_url)
    _stderr(f"schema at version {version}" + (f" (applied {applied})" if applied else ""))


def _db_call(fn: Callable[..., T], *args: object) -> T:
    """Call ``fn`` with a clear message when the database is down."""
    import psycopg

    try:
        return fn(*args)
    except psycopg.OperationalError as exc:
        raise click.ClickException(
            f"database unavailable: {exc}\nStart the local stack with `milepost stack up`,"
            " or set MILEPOST_DATABASE_URL."
        ) from exc


@main.group()
def keys() -> None:
    """API keys (stored hashed; shown once)."""


@keys.command("create")
@click.option("--role", required=True,
              type=click.Choice(["dispatcher", "customer", "device", "admin"]))  # fmt: skip
@click.option("--name", default=None, help="a label to recognise the key by")
@click.pass_context
def keys_create(ctx: click.Context, role: str, name: str | None) -> None:
    """Create an API key; prints only the key on stdout, once."""
    click.echo(create_api_key(_settings(ctx), role, name))


def create_api_key(settings: Settings, role: str, name: str | None) -> str:
    import psycopg

    from api.keys import create_key

    def go() -> str:
        migrate_schema(settings.database_url)
        with psycopg.connect(settings.database_url) as conn:
            return create_key(conn, role, name)

    return _db_call(go)


@keys.command("revoke")
@click.argument("prefix")
@click.pass_context
def keys_revoke(ctx: click.Context, prefix: str) -> None:
    """Revoke a key by its prefix (the 8 characters after mp_)."""
    import psycopg

    from api.keys import revoke_key, split_key

    split = split_key(prefix)
    prefix = split[0] if split else prefix
    with psycopg.connect(_settings(ctx).database_url) as conn:
        if not revoke_key(conn, prefix):
            raise click.ClickException(f"no active key with prefix {prefix!r}")
    _stderr(f"revoked key {prefix}")


@main.group()
def devices() -> None:
    """Vehicles and their broker credentials."""


@devices.command("add")
@click.argument("vehicle_id")
@click.option("--password", default=None, help="broker password (default: generated)")
@click.option("--owntracks", default=None, metavar="USER/DEVICE",
              help="the OwnTracks user/device of this vehicle")  # fmt: skip
@click.option("--osmand", default=None, metavar="ID", help="the Traccar Client / OsmAnd id")
@click.pass_context
def devices_add(ctx: click.Context, vehicle_id: str, password: str | None,
                owntracks: str | None, osmand: str | None) -> None:  # fmt: skip
    """Register a vehicle and its broker account; prints only the password on stdout.

    The broker ACL lets the vehicle publish only under fleet/VEHICLE_ID/#.
    """
    s = _settings(ctx)
    try:
        pw = add_device(s, vehicle_id, password, owntracks=owntracks, osmand=osmand)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(pw)


def add_device(settings: Settings, vehicle_id: str, password: str | None = None, *,
               owntracks: str | None = None, osmand: str | None = None) -> str:  # fmt: skip
    """Register ``vehicle_id`` in the database and, on the local stack, in the broker."""
    import re

    import psycopg

    from milepost import stack as st

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", vehicle_id):
        raise ValueError(f"invalid vehicle id {vehicle_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    if owntracks is not None and not re.fullmatch(r"[^/#+\s]+/[^/#+\s]+", owntracks):
        raise ValueError("--owntracks must be USER/DEVICE")
    pw = password or secrets.token_urlsafe(18)

    def go() -> None:
        migrate_schema(settings.database_url)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute(
                "INSERT INTO vehicle (vehicle_id, owntracks_id, osmand_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (vehicle_id) DO UPDATE SET"
                " owntracks_id = coalesce(excluded.owntracks_id, vehicle.owntracks_id),"
                " osmand_id = coalesce(excluded.osmand_id, vehicle.osmand_id)",
                (vehicle_id, owntracks, osmand),
            )

    _db_call(go)
    if _local_broker(settings):
        st.add_broker_user(settings.state_dir, vehicle_id, pw)
        if owntracks:
            st.add_broker_acl(settings.state_dir, vehicle_id, [f"owntracks/{owntracks}/#"])
    else:
        _stderr("no local broker under the state dir: add the broker account yourself")
    return pw


@main.group()
def manifest() -> None:
    """The day's plan: stops, vehicles, gates, parcels, routes."""


@manifest.command("load")
@click.argument("file", type=click.File("rb"))
@click.pass_context
def manifest_load(ctx: click.Context, file: BinaryIO) -> None:
    """Validate and store a manifest (JSON, the format in DESIGN.md); idempotent.

    FILE may be - for standard input. Every problem is reported with its row and field.
    """
    from ingest import manifest as mf

    try:
        counts = load_manifest(_settings(ctx), file.read())
    except mf.ManifestError as exc:
        raise click.ClickException("\n  ".join(["invalid manifest:", *exc.problems])) from exc
    _stderr("manifest loaded: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def load_manifest(settings: Settings, doc: bytes | dict[str, object]) -> dict[str, int]:
    """Validate and store a manifest in one transaction; raises ManifestError."""
    import psycopg

    from ingest import manifest as mf

    def go() -> dict[str, int]:
        migrate_schema(settings.database_url)
        with psycopg.connect(settings.database_url) as conn:
            stops: dict[str, str] = dict(conn.execute(mf.STORED_STOPS_SQL).fetchall())
            vehicles = {r[0] for r in conn.execute(mf.STORED_VEHICLES_SQL)}
            m = mf.parse_manifest(doc, stops, vehicles)
            with conn.transaction():
                for sql, params in mf.statements(m):
                    conn.execute(sql, params)
            return mf.summary(m)

    return _db_call(go)


@main.group()
def epc() -> None:
    """RFID EPC tools."""


@epc.command("decode")
@click.argument("epcs", nargs=-1, required=True, metavar="HEX...")
def epc_decode(epcs: tuple[str, ...]) -> None:
    """One JSON line per EPC: scheme, filter, pure-identity URN, tag URI, GS1 key, or why
    it is not a GS1 EPC."""
    import orjson

    from devices.epc import decode_epc

    for value in epcs:
        click.echo(orjson.dumps(decode_epc(value).to_json_dict()).decode())


# ------------------------------------------------------------------ processes


@main.command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """MQTT ingest, writer and stats (runs until stopped)."""
    from ingest.service import serve
    from milepost.db import migrate as run_migrate

    s = _settings(ctx)
    _logging(s.log_level)
    _db_call(run_migrate, s.database_url)
    # a second SIGTERM or Ctrl-C during the graceful stop cancels it
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve(s, _ingest_credentials(s)))


def _ingest_credentials(settings: Settings) -> tuple[str, str] | None:
    from milepost import stack as st

    if _local_broker(settings):
        return st.ingest_credentials(settings.state_dir)
    return None


def _local_broker(settings: Settings) -> bool:
    """True when MILEPOST_MQTT_URL is the broker that `stack up` runs under the state dir."""
    from urllib.parse import urlsplit

    from milepost import stack as st

    url = urlsplit(settings.mqtt_url)
    return (
        url.username is None
        and (url.hostname, url.port) == (st.HOST, st.MQTT_PORT)
        and (settings.state_dir / "mqtt" / "mosquitto.conf").exists()
    )


@main.command()
@click.pass_context
def api(ctx: click.Context) -> None:
    """The HTTP API and pages (uvicorn on MILEPOST_API_ADDR)."""
    import uvicorn

    from api.app import create_app
    from milepost.db import migrate as run_migrate

    s = _settings(ctx)
    _logging(s.log_level)
    _db_call(run_migrate, s.database_url)
    tls = {"ssl_certfile": str(s.api_tls_cert), "ssl_keyfile": str(s.api_tls_key)
           } if s.api_tls_cert and s.api_tls_key else {}  # fmt: skip
    uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level=s.log_level.lower(),
                access_log=False, **tls)  # type: ignore[arg-type]  # fmt: skip


@main.command()
@click.option("--vans", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--stops", default=12, show_default=True, type=click.IntRange(1, 200),
              help="delivery stops per van")  # fmt: skip
@click.option("--parcels-per-stop", default=2, show_default=True, type=click.IntRange(1, 50),
              help="at most this many parcels per stop (at least one)")  # fmt: skip
@click.option("--gates", default=None, type=click.IntRange(0, 16),
              help="dock doors with an RFID reader on a pseudo-terminal (Mercury and ASCII"
                   " in turn); 0: no gates, the vans' cargo readers bind the parcels"
                   " [default: 3 at --speedup 1, else 0]")  # fmt: skip
@click.option("--rate", default=0.5, show_default=True, type=click.FloatRange(0.01, 10),
              help="GPS fixes per van per second of day time")  # fmt: skip
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--speedup", default=1.0, show_default=True, type=click.FloatRange(0.1, 1000),
              help="day time runs this many times faster than the wall clock; above or"
                   " below 1 without gates (their readers do not stamp reads: the host"
                   " does, on its clock, which runs at 1)")  # fmt: skip
@click.option("--from", "start", default="departure", show_default=True,
              type=click.Choice(["start", "departure"]),
              help="play the day from the linehaul unload at the hub, or from a minute"
                   " before the first van leaves")  # fmt: skip
@click.option("--duration", default=None, type=click.FloatRange(0.1),
              help="seconds to run (default: until the day is over)")  # fmt: skip
@click.pass_context
def simulate(ctx: click.Context, vans: int, stops: int, parcels_per_stop: int,
             gates: int | None, rate: float, seed: int, speedup: float, start: str,
             duration: float | None) -> None:  # fmt: skip
    """A seeded delivery day, live: loads its manifest (hub, dock doors, stops, vans,
    parcels, routes, gates), then plays it: vans over MQTT (fixes, cargo inventories,
    cargo temperatures, proofs of delivery) and dock-door readers on pseudo-terminals,
    with mis-loads, parcels left behind, wrong drops, failed attempts, a warm van and late
    promises among them."""
    from ingest.mqtt import BrokerAddress
    from simulators.day import DayConfig, gate_entries, make_day
    from simulators.live import run_day

    if gates is None:
        gates = 3 if speedup == 1 else 0
        if speedup != 1:
            _stderr(f"at --speedup {speedup:g} the dock doors' readers are left out (the host"
                    " stamps their reads on its own clock, so they would meet the vans at"
                    " the wrong moment); the vans' cargo readers bind the parcels")  # fmt: skip
    elif gates and speedup != 1:
        raise click.UsageError(
            f"--gates {gates} needs --speedup 1: a gate reader's reads are stamped by the host"
            " on receipt, at the wall clock's pace, while the vans' messages carry day time;"
            " use --gates 0, or --speedup 1")  # fmt: skip
    s = _settings(ctx)
    _logging(s.log_level)
    config = DayConfig(vans=vans, stops_per_van=stops, parcels_per_stop=(1, parcels_per_stop),
                       docks=gates or DOCKS_WITHOUT_GATES, fix_every_s=1.0 / rate)  # fmt: skip
    from_s = 0.0 if start == "start" else max(make_day(config, seed=seed, start_us=0)
                                              .first_departure_s() - 60.0, 0.0)  # fmt: skip
    day = make_day(config, seed=seed, start_us=time.time_ns() // 1000 - round(from_s * 1e6))
    link_dir = (s.state_dir / "sim" / "gates").absolute()
    doc = dict(day.manifest)
    doc["gates"] = (gate_entries(day, {g.gate_id: str(link_dir / g.gate_id) for g in day.gates})
                    if gates else [])  # fmt: skip
    passwords = {vid: add_device(s, vid, _sim_password(seed, vid)) for vid in day.fixes}
    counts = load_manifest(s, doc)
    _stderr("manifest loaded: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    faults = sorted(day.truth.exception_pairs())
    _stderr(f"the day: {len(day.fixes)} vans, {len(doc['parcels'])} parcels,"
            f" {(day.end_us - day.start_us) / 3.6e9:.1f} h; {len(faults)} exceptions and"
            f" {len(day.truth.attempts)} failed attempts planted")  # fmt: skip
    broker = BrokerAddress.from_url(s.mqtt_url)

    async def run() -> None:
        await run_day(day, host=broker.host, port=broker.port, passwords=passwords,
                      from_s=from_s, speedup=speedup, duration_s=duration,
                      link_dir=link_dir if gates else None, progress=_stderr)  # fmt: skip

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


DOCKS_WITHOUT_GATES = 3  # so a day is the same with its gates (the default 3) or without


def _sim_password(seed: int, vehicle_id: str) -> str:
    import hashlib

    return hashlib.sha256(f"milepost-sim:{seed}:{vehicle_id}".encode()).hexdigest()[:24]


@main.command()
@click.option("--vans", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rate", default=0.5, show_default=True, type=click.FloatRange(0.01, 10),
              help="GPS fixes per van per second of day time")  # fmt: skip
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--speedup", default=1.0, show_default=True, type=click.FloatRange(0.1, 1000))
@click.pass_context
def demo(ctx: click.Context, vans: int, rate: float, seed: int, speedup: float) -> None:
    """Everything on the local stack: stack up, migrate, ingest, api and simulate.

    Prints the dashboard URL and a dispatcher key; Ctrl-C stops what it started.
    """
    from milepost import stack as st
    from milepost.db import migrate as run_migrate

    s = _settings(ctx)
    try:
        st.up(s.state_dir, progress=_stderr)
    except st.StackError as exc:
        raise click.ClickException(str(exc)) from exc
    _db_call(run_migrate, s.database_url)
    key = create_api_key(s, "dispatcher", "demo")
    log_dir = s.state_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "milepost"]
    with _Children() as children:
        spawn = children.spawn
        spawn("ingest", [*exe, "ingest"], log_dir / "ingest.log")
        spawn("api", [*exe, "api"], log_dir / "api.log")
        _wait_http(f"http://{s.api_addr}/healthz", 60)
        spawn("simulate", [*exe, "simulate", "--vans", str(vans), "--rate", str(rate),
                           "--seed", str(seed), "--speedup", str(speedup)],
              log_dir / "simulate.log")  # fmt: skip
        base = f"http://{s.api_addr}"
        click.echo(
            f"\nmilepost demo is running ({vans} vans)\n"
            f"  dashboard:      {base}/dashboard  (paste the dispatcher key below)\n"
            f"  tracking page:  {base}/track/<tracking number>  (e.g. from /v1/parcels)\n"
            f"  vehicles:       curl -H 'Authorization: Bearer {key}' {base}/v1/vehicles\n"
            f"  dispatcher key: {key}\n"
            f"  API docs:       {base}/docs\n"
            f"  logs:           {log_dir}/\n"
            "Ctrl-C stops ingest, api and the simulator (the stack keeps running:"
            " `milepost stack down`).\n"
        )
        _stop_on_signals()
        with contextlib.suppress(KeyboardInterrupt):
            while children.alive():
                time.sleep(1)
            _stderr("a component exited; see its log under var/log/")


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both end the demo (a shell may start it with SIGINT ignored)."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class _Children:
    """The demo's child processes: started in order, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str], log_path: Path) -> None:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        _stderr(f"started {name} (pid {proc.pid}), log {log_path}")

    def alive(self) -> bool:
        return all(proc.poll() is None for _, proc in self.procs)

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _stderr(f"stopped {name}")


def _wait_http(url: str, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None) == 503:
                return  # up, but degraded: still serving
            time.sleep(0.3)
    raise click.ClickException(f"{url} did not answer within {timeout_s:.0f} s; see var/log/")


if __name__ == "__main__":
    main()
