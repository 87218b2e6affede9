"""GET /v1/live: positions and parcel events as server-sent events, fed by LISTEN/NOTIFY
from ingest's commits, filtered by van, resumable with Last-Event-ID."""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.conftest import Proc
from tests.integration.test_gps_slice import pub


class Stream:
    """An SSE client in a thread: (id, event, data) triples on a queue."""

    def __init__(self, url: str, key: str, params: dict[str, Any],
                 last_event_id: str | None = None) -> None:  # fmt: skip
        self.events: queue.Queue[tuple[str | None, str, dict[str, Any]]] = queue.Queue()
        self.stop = threading.Event()
        headers = {"Authorization": f"Bearer {key}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(url, headers, params), daemon=True)
        self.thread.start()

    def _run(self, url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server went away at the end
            self._read(url, headers, params)

    def _read(self, url: str, headers: dict[str, str], params: dict[str, Any]) -> None:
        with httpx.stream("GET", url, headers=headers, params=params,
                          timeout=httpx.Timeout(5.0, read=30.0)) as r:  # fmt: skip
            self.status = r.status_code
            ident, event, data = None, "message", ""
            for line in r.iter_lines():
                if self.stop.is_set():
                    return
                if line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    self.events.put((ident, event, json.loads(data)))
                    ident, event, data = None, "message", ""

    def until(self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 20.0
              ) -> list[tuple[str | None, str, dict[str, Any]]]:  # fmt: skip
        """Everything received until an event matches (inclusive)."""
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            got.append(item)
            if predicate(item[1], item[2]):
                return got
        raise AssertionError(f"no matching event within {timeout} s; got {got[-5:]}")


def test_live_positions_parcels_filter_and_resume(
    ingest: Proc, api_url: str, cli: Callable[..., str], tmp_path: Path
) -> None:
    tag = secrets.token_hex(3).upper()
    van, other, stop, tn = f"LV{tag}-VAN", f"LV{tag}-OTHER", f"LV{tag}-S", f"LV{tag}-P1"
    path = tmp_path / "m.json"
    path.write_text(json.dumps({
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 40,
                   "geofence": {"type": "Point", "coordinates": [13.52, 52.62]}}],
        "parcels": [{"tracking_number": tn, "stop_id": stop}]}))  # fmt: skip
    cli("manifest", "load", str(path))
    pw = {v: cli("devices", "add", v) for v in (van, other)}
    key = cli("keys", "create", "--role", "dispatcher")
    now = datetime.now(UTC).replace(microsecond=0)

    def fix(v: str, k: int) -> None:
        body = orjson.dumps({"ts": (now + timedelta(seconds=k)).isoformat(), "lon": 13.52,
                             "lat": 52.62 + k * 1e-5})  # fmt: skip
        assert pub(v, pw[v], f"fleet/{v}/gps", [body]).returncode == 0

    fix(van, 0)
    time.sleep(1.0)
    s = Stream(f"{api_url}/v1/live", key, {"vehicle_id": van})
    hello = s.until(lambda e, d: e == "hello")
    assert hello[-1][2] == {"resumed": False}
    snap = s.until(lambda e, d: e == "position")  # the snapshot: this van only
    assert snap[-1][2]["vehicle_id"] == van
    time.sleep(5.5)  # the plan (with the parcel) is re-read every 5 s
    fix(other, 1)
    fix(van, 2)
    got = s.until(lambda e, d: e == "position" and d["time"].startswith(
        (now + timedelta(seconds=2)).isoformat()[:19]))
    assert all(d.get("vehicle_id") in (van, None) for _, _, d in got)
    last_id = got[-1][0]
    assert last_id is not None
    s.stop.set()

    # while nobody listens: a proof of delivery and another fix; then resume
    pod = orjson.dumps({"ts": (now + timedelta(seconds=3)).isoformat(), "tracking_number": tn,
                        "outcome": "delivered"})  # fmt: skip
    assert pub(van, pw[van], f"fleet/{van}/pod", [pod]).returncode == 0
    fix(van, 4)
    time.sleep(2.0)
    again = Stream(f"{api_url}/v1/live", key, {"vehicle_id": van}, last_event_id=last_id)
    at4 = (now + timedelta(seconds=4)).isoformat()[:19]
    missed = again.until(lambda e, d: e == "position" and d["time"].startswith(at4))
    assert missed[0][1:] == ("hello", {"resumed": True})
    parcels = [d for _, e, d in missed if e == "parcel"]
    assert [(d["tracking_number"], d["status"]) for d in parcels] == [(tn, "Delivered")]
    again.stop.set()
    # a customer key gets no fleet stream
    assert httpx.get(f"{api_url}/v1/live", headers={"Authorization": "Bearer " + cli(
        "keys", "create", "--role", "customer")}).status_code == 403


def test_an_osmand_report_is_a_live_position(
    ingest: Proc, api_url: str, cli: Callable[..., str]
) -> None:
    """OsmAnd reports go through the API's fix_inbox to ingest, which notifies them as
    every other transport's fixes."""
    tag = secrets.token_hex(3).upper()
    van, device = f"LO{tag}-VAN", f"lo{tag.lower()}"
    cli("devices", "add", van, "--osmand", device)
    key = cli("keys", "create", "--role", "dispatcher")
    stream = Stream(f"{api_url}/v1/live", key, {"vehicle_id": van})
    try:
        time.sleep(1.0)  # subscribed before the report
        ts = int(time.time()) - 30
        r = httpx.get(f"{api_url}/osmand", params={"id": device, "lat": "52.51", "lon": "13.39",
                                                   "timestamp": str(ts), "speed": "10"})
        assert r.status_code == 200, r.text
        got = stream.until(lambda e, d: e == "position" and d["vehicle_id"] == van)
        data = got[-1][2]
        assert (data["lat"], data["lon"]) == (52.51, 13.39)
        assert datetime.fromisoformat(data["time"]) == datetime.fromtimestamp(ts, UTC)
    finally:
        stream.stop.set()
