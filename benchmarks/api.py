"""Issue 6, item 8: the read API under load, against a bare ASGI endpoint serving the same bytes.

Everything runs on this machine against 127.0.0.1, in one run:

* data: a fresh database (BenchDb, migrated with ``milepost.db.migrate``), seeded from a
  seeded manifest (a hub, 500 delivery stops, 2,000 vans, 10,000 parcels) stored with
  ``ingest.manifest.statements``; each parcel then gets a lifecycle stage (InfoReceived,
  at the hub, loaded, out for delivery, delivered, failed attempt, exception) as its
  ``parcel_latest`` row (van, ETA window for bound parcels) and 0-4 ``parcel_event`` rows
  with ``detail``; 2,000 ``vehicle_latest`` rows (a tenth at the hub, a fifth at a
  delivery stop, fixes 0-15 min old); one dispatcher key from ``api.keys.create_key``.
* milepost: the real ``milepost api`` command in its own process (``python -m milepost
  api``: ``create_app(settings)`` under ``uvicorn.run`` with the CLI's arguments), with
  the production settings except the per-key rate limit, raised to 10^6/s (burst 10^6)
  so the token bucket still runs but never answers 429.
* bare endpoint: a raw ASGI callable under ``uvicorn.run`` with the same arguments
  (host, port, ``log_level``, ``access_log=False``; uvicorn's defaults otherwise: the
  asyncio loop and h11, as neither uvloop nor httptools is installed), in its own
  process, answering each path with the status, headers and body milepost gave for it,
  captured before the load (uvicorn adds ``date`` and ``server`` to both); the run
  checks that bodies and header sizes are equal.
* load: Debian's ``wrk`` (``-t 2 -c 4``, a Lua script that sends the Authorization
  header and cycles through 256 seeded tracking numbers; ``/v1/vehicles`` alone for the
  list), ``warmup_s`` unmeasured then ``measure_s`` measured, per round for each of the
  four (endpoint, server) pairs in an order rotated every round; any non-2xx answer or
  socket error fails the run. Throughput ratio = median over rounds of the same round's
  milepost / bare requests per second. The server process's CPU time (``/proc``) over
  each measured run, per request, is kept too: unlike requests per second it hardly
  moves when a neighbour takes CPU.
* latency: Debian's wrk has no ``-R`` (that is wrk2, which Debian does not ship), so a
  fixed-rate client in a process of its own: asyncio streams, pre-built requests over 8
  keep-alive connections, request ``i`` due at ``start + i / rate`` (open loop, rate =
  half milepost's sustained median for that endpoint). A request's latency is from when
  it was due to its last body byte, so time spent waiting for a free connection counts
  (no coordinated omission); the first ``latency_warmup_s`` of each phase are not
  counted. ``latency_rounds`` rounds, order rotated; the figures are medians over the
  rounds of each round's percentile (the pooled percentiles are in the JSON). The bare
  endpoint gets the same rate, for reference: the client's and uvicorn's own share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import orjson
import psycopg
import uvicorn
from numpy.typing import NDArray

from api.keys import create_key
from benchmarks.cases import BenchDb
from ingest.manifest import parse_manifest, statements

ROOT: Final = Path(__file__).resolve().parents[1]
LOG_DIR: Final = ROOT / "var" / "log"
HOST: Final = "127.0.0.1"
CITY: Final = (13.4050, 52.5200)  # lon, lat
PARCEL: Final = "parcel"
VEHICLES: Final = "vehicles"
MILEPOST: Final = "milepost"
BARE: Final = "bare"
ENDPOINTS: Final = {PARCEL: "GET /v1/parcels/{tracking_number}",
                    VEHICLES: "GET /v1/vehicles"}  # fmt: skip
# uvicorn adds these to every answer, from milepost and from the bare endpoint alike
UVICORN_HEADERS: Final = frozenset({b"date", b"server"})
PROBE_QUEUE: Final = 100_000  # requests due but not yet sent; beyond it a request is dropped


class BenchError(RuntimeError):
    """A server did not start, answered wrongly, or the load generator failed."""


@dataclass(frozen=True, slots=True)
class Params:
    rounds: int = 5
    seed: int = 1
    stops: int = 500
    vans: int = 2_000
    parcels: int = 10_000
    sampled_parcels: int = 256  # tracking numbers the parcel load cycles through
    threads: int = 2
    connections: int = 4
    warmup_s: float = 2.0
    measure_s: float = 8.0
    latency_rounds: int = 3
    latency_warmup_s: float = 1.0
    latency_s: float = 5.0
    latency_connections: int = 8


# ---------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class Seeded:
    key: str
    sampled: list[str]  # tracking numbers, the parcel load's cycle
    stages: dict[str, int]  # parcels per lifecycle stage


# (status, sub_status) of each stage after InfoReceived, and the events that lead there
_EVENTS: Final = (
    ("InTransit", "InTransit_002", {"evidence": "gate", "gate_id": "G-1", "antenna": 2}),
    ("InTransit", "InTransit_007", {"evidence": "gate", "confidence": 0.92}),
    ("OutForDelivery", "OutForDelivery_001", {"evidence": "geofence"}),
    ("Delivered", "Delivered_001", {"evidence": "pod", "dist_m": 12.4}),
)
_STAGES: Final = ("InfoReceived", "at_hub", "loaded", "out", "delivered", "attempt_fail",
                  "exception")  # fmt: skip
_STAGE_SHARE: Final = (0.10, 0.15, 0.15, 0.35, 0.17, 0.04, 0.04)
_DONE: Final = (0, 1, 2, 3, 4, 3, 2)  # how many of _EVENTS each stage has been through
_LAST: Final = {5: ("AttemptFail", "AttemptFail_001", {"evidence": "pod", "reason": "absent"}),
                6: ("Exception", "Exception_MISLOAD", {"evidence": "gate", "confidence": 0.81})}


def manifest_doc(p: Params, rng: np.random.Generator) -> dict[str, Any]:
    lon = CITY[0] + rng.normal(0, 0.06, p.stops)
    lat = CITY[1] + rng.normal(0, 0.04, p.stops)
    stops: list[dict[str, Any]] = [
        {"stop_id": "HUB-1", "kind": "hub", "name": "Bench hub", "radius_m": 150.0,
         "geofence": {"type": "Point", "coordinates": list(CITY)}},
        *({"stop_id": f"S-{k:04d}", "kind": "delivery", "name": f"{k + 1} Bench Street",
           "radius_m": 30.0, "geofence": {"type": "Point", "coordinates": [x, y]}}
          for k, (x, y) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True))),
    ]  # fmt: skip
    day = datetime.now(UTC).replace(hour=18, minute=0, second=0, microsecond=0)
    stop_of = rng.integers(0, p.stops, p.parcels).tolist()
    return {
        "stops": stops,
        "vehicles": [{"vehicle_id": f"VAN-{v:04d}"} for v in range(p.vans)],
        "parcels": [{"tracking_number": f"MPB{i:08d}", "stop_id": f"S-{s:04d}",
                     "promised_by": day.isoformat()} for i, s in enumerate(stop_of)],
    }  # fmt: skip


def seed(url: str, p: Params) -> Seeded:
    rng = np.random.default_rng(p.seed)
    m = parse_manifest(manifest_doc(p, rng))
    now = datetime.now(UTC)
    stage = rng.choice(len(_STAGES), p.parcels, p=_STAGE_SHARE).tolist()
    van = rng.integers(0, p.vans, p.parcels).tolist()
    latest: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for i, (parcel, k) in enumerate(zip(m.parcels, stage, strict=True)):
        tn, vid = parcel.tracking_number, f"VAN-{van[i]:04d}"
        t = now - timedelta(hours=3)
        mine: list[tuple[Any, ...]] = []
        for status, sub, detail in _EVENTS[:_DONE[k]]:
            t += timedelta(minutes=float(rng.uniform(5, 40)))
            mine.append((t, tn, status, sub, None if sub == "InTransit_002" else vid,
                         parcel.stop_id if status == "Delivered" else None, detail))
        if k in _LAST:
            t += timedelta(minutes=float(rng.uniform(5, 40)))
            mine.append((t, tn, *_LAST[k][:2], vid, parcel.stop_id, _LAST[k][2]))
        now_status, now_sub = (mine[-1][2], mine[-1][3]) if mine else ("InfoReceived", None)
        bound = _STAGES[k] in ("loaded", "out", "attempt_fail", "exception")
        eta = now + timedelta(minutes=float(rng.uniform(10, 240))) if k in (2, 3) else None
        latest.append((tn, t if mine else now, now_status, now_sub, vid if bound else None, eta,
                       eta - timedelta(minutes=15) if eta else None,
                       eta + timedelta(minutes=20) if eta else None,
                       0.8 if eta else None))  # fmt: skip
        events += mine
    at = rng.uniform(0, 1, p.vans)
    stop_k = rng.integers(0, p.stops, p.vans).tolist()
    vlon = (CITY[0] + rng.normal(0, 0.06, p.vans)).tolist()
    vlat = (CITY[1] + rng.normal(0, 0.04, p.vans)).tolist()
    speed = rng.uniform(0, 15, p.vans).tolist()
    heading = rng.uniform(0, 360, p.vans).tolist()
    age_s = rng.uniform(0, 900, p.vans).tolist()
    vehicles = [(f"VAN-{v:04d}", now - timedelta(seconds=age_s[v]), vlon[v], vlat[v],
                 speed[v], heading[v], 5.0,
                 "HUB-1" if at[v] < 0.1 else f"S-{stop_k[v]:04d}" if at[v] < 0.3 else None)
                for v in range(p.vans)]  # fmt: skip
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for sql, params in statements(m):  # stops, vehicles, parcels: no statement reads another
        grouped.setdefault(sql, []).append(params)
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            for sql, rows in grouped.items():
                cur.executemany(sql, rows)
            cur.execute(
                "UPDATE parcel_latest l SET time = u.t, status = u.status, sub_status = u.sub,"
                " vehicle_id = u.vid, eta = u.eta, eta_earliest = u.e0, eta_latest = u.e1,"
                " eta_confidence = u.conf FROM unnest(%s::text[], %s::timestamptz[],"
                " %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[],"
                " %s::timestamptz[], %s::float8[]) AS u(tn, t, status, sub, vid, eta, e0, e1,"
                " conf) WHERE l.tracking_number = u.tn",
                [list(c) for c in zip(*latest, strict=True)],
            )  # fmt: skip
            with cur.copy("COPY parcel_event (time, event_id, tracking_number, status,"
                          " sub_status, vehicle_id, stop_id, detail) FROM STDIN") as cp:
                for t, tn, status, sub, vid, stop, detail in events:
                    cp.write_row((t, _uuid(rng), tn, status, sub, vid, stop,
                                  orjson.dumps(detail).decode()))
            cur.executemany(
                "INSERT INTO vehicle_latest (vehicle_id, time, lon, lat, speed_mps, heading_deg,"
                " acc_m, stop_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", vehicles)
            key = create_key(conn, "dispatcher", "bench-api")
        conn.execute("ANALYZE")
    picks = rng.choice(p.parcels, p.sampled_parcels, replace=False).tolist()
    return Seeded(key, [m.parcels[i].tracking_number for i in picks],
                  {s: stage.count(k) for k, s in enumerate(_STAGES)})  # fmt: skip


def _uuid(rng: np.random.Generator) -> str:
    h = bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


# ---------------------------------------------------------------- the servers


Captured = dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]]  # path -> answer


class BareEndpoint:
    """A raw ASGI callable that answers each known path with its captured answer."""

    def __init__(self, answers: Captured) -> None:
        self.answers = answers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, headers, body = self.answers.get(scope["path"], (404, [], b""))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def uvicorn_options(port: int) -> dict[str, Any]:
    """The arguments ``milepost api`` (milepost/cli.py) gives ``uvicorn.run``, at the
    default settings (log level INFO)."""
    return {"host": HOST, "port": port, "log_level": "info", "access_log": False}


def serve_bare(port: int, answers_path: Path) -> None:
    raw = orjson.loads(answers_path.read_bytes())
    answers: Captured = {
        path: (a["status"], [(k.encode("latin-1"), v.encode("latin-1")) for k, v in a["headers"]],
               base64.b64decode(a["body"]))
        for path, a in raw.items()
    }  # fmt: skip
    uvicorn.run(BareEndpoint(answers), **uvicorn_options(port))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, path: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                httpx.get(self.url + path, timeout=2.0)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise BenchError(f"{self.name} did not answer within {timeout_s:.0f} s; see {self.log}")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system); NaN off Linux."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running(name: str, argv: list[str], env: dict[str, str], port: int,
            ready_path: str) -> Iterator[Server]:  # fmt: skip
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"bench-api-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = Server(name, port, proc, log)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


def milepost_env(db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILEPOST_")}
    env.update({"MILEPOST_DATABASE_URL": db_url, "MILEPOST_API_ADDR": f"{HOST}:{port}",
                "MILEPOST_STATE_DIR": str(ROOT / "var"),
                "MILEPOST_RATE_LIMIT_PER_S": "1000000", "MILEPOST_RATE_LIMIT_BURST": "1000000"})
    return env


def capture(server: Server, paths: list[str], key: str) -> tuple[Captured, dict[str, int]]:
    """Each path's answer from milepost, less the headers uvicorn adds itself, and the
    size of its whole header block."""
    out: Captured = {}
    sizes: dict[str, int] = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        for path in paths:
            r = c.get(path)
            if r.status_code != 200:
                raise BenchError(f"milepost answered {path} with {r.status_code}: {r.text[:200]}")
            headers = [(k.lower(), v) for k, v in r.headers.raw if k.lower() not in UVICORN_HEADERS]
            out[path] = (r.status_code, headers, r.content)
            sizes[path] = _header_bytes(r)
    return out, sizes


def _header_bytes(r: httpx.Response) -> int:
    return sum(len(k) + len(v) + 4 for k, v in r.headers.raw)


def check_same_bytes(bare: Server, answers: Captured, header_bytes: dict[str, int]) -> None:
    """The bare endpoint answers every path with milepost's body and as many header bytes."""
    with httpx.Client(base_url=bare.url) as c:
        for path, (status, _, body) in answers.items():
            r = c.get(path)
            if (r.status_code, r.content, _header_bytes(r)) != (status, body, header_bytes[path]):
                raise BenchError(f"the bare endpoint's answer to {path} is not milepost's")


# ---------------------------------------------------------------- wrk


_LUA: Final = """-- written by benchmarks/api.py: cycle through the paths, with the key
local paths = {%s}
local auth = "Bearer %s"
local requests = {}
local n = 0
init = function(args)
  for i, p in ipairs(paths) do
    requests[i] = wrk.format("GET", p, {["Authorization"] = auth})
  end
end
request = function()
  n = n %% #requests + 1
  return requests[n]
end
"""
_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests_per_s: float
    requests: int
    seconds: float
    p50_s: float
    p99_s: float


def wrk_script(directory: Path, name: str, paths: list[str], key: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(_LUA % (", ".join(f'"{p}"' for p in paths), key))
    return path


def wrk(url: str, script: Path, p: Params, seconds: float) -> WrkRun:
    argv = ["wrk", "-t", str(p.threads), "-c", str(p.connections), "-d", f"{seconds:g}s",
            "--latency", "--timeout", "10s", "-s", str(script), url]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    if bad or errors:
        raise BenchError(f"wrk against {url}: {bad.group(0) if bad else ''}"
                         f" {errors.group(0) if errors else ''}\n{text}")  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    if rate is None or total is None:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    pct = {int(m.group(1)): float(m.group(2)) * _UNITS[m.group(3)]
           for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}  # fmt: skip
    return WrkRun(float(rate.group(1)), int(total.group(1)),
                  float(total.group(2)) * _UNITS[total.group(3)], pct.get(50, math.nan),
                  pct.get(99, math.nan))  # fmt: skip


# ---------------------------------------------------------------- fixed-rate latency probe


@dataclass(frozen=True, slots=True)
class ProbeParams:
    port: int
    requests: list[bytes]  # whole HTTP/1.1 requests, sent in turn
    rate_per_s: float
    warmup_s: float
    measure_s: float
    connections: int


def percentile(x: NDArray[np.float64], q: float) -> float:
    return float(np.percentile(x, q, method="higher")) if len(x) else math.nan


_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one whole response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    m = _LENGTH.search(head)
    if m is None:
        raise BenchError(f"an answer without content-length: {head[:200]!r}")
    await reader.readexactly(int(m.group(1)))
    return int(head[9:12])


async def _probe(p: ProbeParams) -> dict[str, Any]:
    n = math.ceil(p.rate_per_s * (p.warmup_s + p.measure_s))
    done = np.full(n, math.inf)
    status = np.zeros(n, np.int32)
    queue: asyncio.Queue[int] = asyncio.Queue(PROBE_QUEUE)
    dropped = 0
    conns = [await asyncio.open_connection(HOST, p.port) for _ in range(p.connections)]
    start = time.perf_counter() + 0.05

    async def schedule() -> None:
        nonlocal dropped
        for i in range(n):
            wait = start + i / p.rate_per_s - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                queue.put_nowait(i)
            except asyncio.QueueFull:  # overflow policy: drop, counted; its latency is inf
                dropped += 1
        for _ in conns:
            await queue.put(-1)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (i := await queue.get()) >= 0:
            writer.write(p.requests[i % len(p.requests)])
            status[i] = await _answer(reader)
            done[i] = time.perf_counter()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(schedule(), name="probe-schedule")
        for k, (reader, writer) in enumerate(conns):
            tg.create_task(worker(reader, writer), name=f"probe-conn-{k}")
    for _, writer in conns:
        writer.close()
    due = start + np.arange(n) / p.rate_per_s
    measured = due >= start + p.warmup_s
    lat = done[measured] - due[measured]

    def pct(q: float) -> float:
        return percentile(lat, q)

    return {"rate_target_per_s": p.rate_per_s,
            "rate_achieved_per_s": float(np.isfinite(lat).sum() / p.measure_s),
            "measured_requests": int(measured.sum()), "dropped": dropped,
            "non_200": int((status[measured] != 200).sum()),
            "p50_s": pct(50), "p90_s": pct(90), "p99_s": pct(99), "max_s": pct(100),
            "latencies_s": lat.tolist()}  # fmt: skip


def latency_client(conn: Connection) -> None:
    """Child process: run each phase it is sent, send back its summary; None ends it."""
    while (p := conn.recv()) is not None:
        conn.send(asyncio.run(_probe(p)))


class LatencyClient:
    """The fixed-rate client in a process of its own (spawned once, a clean interpreter)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=latency_client, args=(child,), name="bench-api-latency")
        self.proc.start()
        child.close()

    def measure(self, p: ProbeParams) -> dict[str, Any]:
        self.conn.send(p)
        if not self.conn.poll(p.warmup_s + p.measure_s + 60):
            raise BenchError("the latency client gave no result")
        try:
            result: dict[str, Any] = self.conn.recv()
        except EOFError:
            raise BenchError("the latency client died (its traceback is above)") from None
        if result["non_200"]:
            raise BenchError(f"{result['non_200']} answers other than 200 at the fixed rate")
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it is gone already
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def http_requests(paths: list[str], key: str, port: int) -> list[bytes]:
    return [f"GET {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n"
            .encode() for p in paths]  # fmt: skip


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class Series:
    runs: list[float] = field(default_factory=list)  # requests/s
    cpu_us: list[float] = field(default_factory=list)  # server CPU per request
    p50_s: list[float] = field(default_factory=list)  # wrk's, saturated
    p99_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def _say(msg: str) -> None:
    print(f"   {msg}", flush=True, file=sys.stderr)


def run(p: Params) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `apt-get install -y wrk` (make bench does)")
    db = BenchDb.create()
    try:
        _say(f"seeding {p.parcels:,} parcels, {p.vans:,} vans in {db.name}")
        seeded = seed(db.url, p)
        return _run(db, seeded, p)
    finally:
        db.drop()


def _run(db: BenchDb, seeded: Seeded, p: Params) -> dict[str, Any]:
    paths = {PARCEL: [f"/v1/parcels/{tn}" for tn in seeded.sampled], VEHICLES: ["/v1/vehicles"]}
    m_port, b_port = _free_port(), _free_port()
    exe = sys.executable
    pairs = [(e, s) for e in ENDPOINTS for s in (MILEPOST, BARE)]
    series = {pair: Series() for pair in pairs}
    latency: dict[tuple[str, str], list[dict[str, Any]]] = {pair: [] for pair in pairs}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        with running(MILEPOST, [exe, "-m", "milepost", "api"], milepost_env(db.url, m_port),
                     m_port, "/healthz") as milepost:  # fmt: skip
            answers, header_bytes = capture(milepost, paths[PARCEL] + paths[VEHICLES],
                                            seeded.key)  # fmt: skip
            sizes = {e: statistics.median(len(answers[x][2]) for x in paths[e]) for e in paths}
            answers_file = work / "answers.json"
            answers_file.write_bytes(orjson.dumps({
                x: {"status": s, "headers": [(k.decode("latin-1"), v.decode("latin-1"))
                                             for k, v in h],
                    "body": base64.b64encode(body).decode()}
                for x, (s, h, body) in answers.items()}))  # fmt: skip
            with running(BARE, [exe, "-m", "benchmarks.api", "bare", "--port", str(b_port),
                                "--answers", str(answers_file)], dict(os.environ), b_port,
                         "/") as bare:  # fmt: skip
                check_same_bytes(bare, answers, header_bytes)
                servers = {MILEPOST: milepost, BARE: bare}
                scripts = {e: wrk_script(work, e, paths[e], seeded.key) for e in paths}
                for r in range(p.rounds):
                    for e, s in pairs[r % 4:] + pairs[:r % 4]:  # rotate: share the noise
                        _say(f"round {r + 1}/{p.rounds}: {ENDPOINTS[e]} on {s}")
                        wrk(servers[s].url, scripts[e], p, p.warmup_s)
                        cpu0 = servers[s].cpu_s()
                        got = wrk(servers[s].url, scripts[e], p, p.measure_s)
                        cpu = servers[s].cpu_s() - cpu0
                        v = series[e, s]
                        v.runs.append(got.requests_per_s)
                        v.cpu_us.append(cpu / got.requests * 1e6)
                        v.p50_s.append(got.p50_s)
                        v.p99_s.append(got.p99_s)
                rates = {e: series[e, MILEPOST].median / 2 for e in ENDPOINTS}
                client = LatencyClient()
                try:
                    for r in range(p.latency_rounds):
                        for e, s in pairs[r % 4:] + pairs[:r % 4]:
                            _say(f"latency {r + 1}/{p.latency_rounds}: {ENDPOINTS[e]} on {s}"
                                 f" at {rates[e]:,.0f} requests/s for {p.latency_warmup_s:g}"
                                 f" + {p.latency_s:g} s")  # fmt: skip
                            port = servers[s].port
                            latency[e, s].append(client.measure(ProbeParams(
                                port, http_requests(paths[e], seeded.key, port), rates[e],
                                p.latency_warmup_s, p.latency_s, p.latency_connections)))
                finally:
                    client.close()
    return _report(series, latency, sizes, seeded, p)


def _ratio(series: dict[tuple[str, str], Series], e: str) -> tuple[float, list[float]]:
    """Median over rounds of the same round's milepost / bare ratio."""
    per_round = [a / b for a, b in zip(series[e, MILEPOST].runs, series[e, BARE].runs,
                                       strict=True)]  # fmt: skip
    return statistics.median(per_round), per_round


def _latency_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of each round's figures (a noisy neighbour in one round moves
    them little), the same over every request of every round, and the rounds."""
    pooled = np.concatenate([np.asarray(r.pop("latencies_s")) for r in rounds])
    keys = ("rate_target_per_s", "rate_achieved_per_s", "p50_s", "p90_s", "p99_s", "max_s")
    return {**{k: statistics.median(r[k] for r in rounds) for k in keys},
            "measured_requests": sum(r["measured_requests"] for r in rounds),
            "dropped": sum(r["dropped"] for r in rounds),
            "pooled": {f"p{q}_s": percentile(pooled, q) for q in (50, 90, 99, 100)},
            "rounds": rounds}  # fmt: skip


def _report(series: dict[tuple[str, str], Series],
            latency: dict[tuple[str, str], list[dict[str, Any]]], sizes: dict[str, float],
            seeded: Seeded, p: Params) -> dict[str, Any]:  # fmt: skip
    lat = {e: {s: _latency_summary(latency[e, s]) for s in (MILEPOST, BARE)} for e in ENDPOINTS}
    targets: list[tuple[str, tuple[float, list[float]], str, float]] = [
        (f"{ENDPOINTS[PARCEL]}: milepost / bare (requests/s)", _ratio(series, PARCEL), ">=", 0.4),
        (f"{ENDPOINTS[VEHICLES]}, {p.vans:,} vans: milepost / bare (requests/s)",
         _ratio(series, VEHICLES), ">=", 0.4),
        *((f"p99 latency (ms), {ENDPOINTS[e]}, half sustained rate",
           (lat[e][MILEPOST]["p99_s"] * 1000,
            [r["p99_s"] * 1000 for r in lat[e][MILEPOST]["rounds"]]), "<", 25.0)
          for e in ENDPOINTS),
    ]  # fmt: skip
    return {
        "params": asdict(p),
        "method": __doc__,
        "load_generator": _wrk_version(),
        "latency_client": "fixed-rate asyncio client (benchmarks/api.py), own process",
        "data": {"parcels": p.parcels, "stages": seeded.stages, "vans": p.vans,
                 "stops": p.stops, "sampled_parcels": len(seeded.sampled)},
        "body_bytes_median": sizes,
        "throughput": {f"{e}_{s}": {"what": f"{ENDPOINTS[e]} on {s}", "unit": "requests/s",
                                    "median": v.median, "runs": v.runs,
                                    "server_cpu_us_per_request": v.cpu_us,
                                    "server_cpu_us_per_request_median":
                                        statistics.median(v.cpu_us),
                                    "wrk_p50_s": v.p50_s, "wrk_p99_s": v.p99_s}
                       for (e, s), v in series.items()},
        "latency": lat,
        "targets": [{"name": n, "value": v, "per_round": rounds, "op": op, "target": t,
                     "pass": bool(v >= t if op == ">=" else v < t)}
                    for n, (v, rounds), op, t in targets],
    }  # fmt: skip


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.stdout + out.stderr).splitlines()[0] if (out.stdout + out.stderr) else "unknown"


def table(result: dict[str, Any]) -> str:
    """The human-readable summary of :func:`run`'s result."""
    par = result["params"]
    lines = ["", f"milepost API benchmark (issue 6): medians of {par['rounds']} rounds of"
             f" {par['measure_s']:g} s under wrk -t {par['threads']} -c {par['connections']}"
             f" ({result['load_generator'].split(' Copyright')[0]})", ""]  # fmt: skip
    for e, what in ENDPOINTS.items():
        size = result["body_bytes_median"][e]
        lines.append(f"  {what}  (body {size:,.0f} bytes)")
        for s in (MILEPOST, BARE):
            v = result["throughput"][f"{e}_{s}"]
            runs = ", ".join(f"{x:,.0f}" for x in v["runs"])
            lines.append(f"    {s:<9} {v['median']:>9,.0f} requests/s"
                         f"  {v['server_cpu_us_per_request_median']:>7,.0f} us server CPU"
                         f" per request  [{runs}]")  # fmt: skip
        for s in (MILEPOST, BARE):
            v = result["latency"][e][s]
            lines.append(f"    {s:<9} at {v['rate_achieved_per_s']:>7,.0f}/s: p50"
                         f" {v['p50_s'] * 1000:6.2f} ms, p90 {v['p90_s'] * 1000:6.2f} ms,"
                         f" p99 {v['p99_s'] * 1000:6.2f} ms, max {v['max_s'] * 1000:6.1f} ms"
                         f" (all rounds' p99 {v['pooled']['p99_s'] * 1000:.2f} ms over"
                         f" {v['measured_requests']:,}; {v['dropped']} dropped)")  # fmt: skip
        lines.append("")
    lines.append(f"  (latency: medians of {par['latency_rounds']} rounds of"
                 f" {par['latency_s']:g} s from a fixed-rate asyncio client at half milepost's"
                 " sustained rate, due time -> last byte; Debian's wrk has no -R)")
    lines.append("")
    nw = max(len(t["name"]) for t in result["targets"])
    lines.append("  targets (ratios: median over rounds of the same round's ratio)")
    for t in result["targets"]:
        verdict = "PASS" if t["pass"] else "MISS"
        rounds = f"  [{', '.join(f'{x:.2f}' for x in t['per_round'])}]" if t["per_round"] else ""
        lines.append(f"  {t['name']:<{nw}}  {t['value']:>6.2f}  {t['op']} {t['target']:<3g}"
                     f"  {verdict}{rounds}")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.api bare --port N --answers FILE``: the bare endpoint."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api")
    parser.add_argument("what", choices=["bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    args = parser.parse_args(argv)
    serve_bare(args.port, args.answers)


if __name__ == "__main__":
    main()

