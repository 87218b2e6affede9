"""Signed webhooks end to end: subscriptions through the API, parcel events from ingest,
deliveries to a real HTTP receiver that checks every signature on its own, retried
through the receiver's errors and a restart of the receiver, each event once by id."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.integration.conftest import Proc, free_port, wait_until
from tests.integration.test_gps_slice import pub

LON, LAT = 13.5100, 52.6100


class Receiver:
    """A webhook receiver as a customer would write one: verify, then deduplicate."""

    def __init__(self, secret: str, fail_first: int) -> None:
        self.secret, self.fail_left = secret.encode(), fail_first
        self.port = free_port()
        self.events: dict[str, dict[str, Any]] = {}
        self.requests = self.bad_signatures = self.duplicates = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-Milepost-Timestamp"]
                want = "sha256=" + hmac.new(receiver.secret, ts.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()  # fmt: skip
                with receiver.lock:
                    receiver.requests += 1
                    if not hmac.compare_digest(want, self.headers["X-Milepost-Signature"]):
                        receiver.bad_signatures += 1
                        self.send_response(401)
                    elif receiver.fail_left > 0:
                        receiver.fail_left -= 1
                        self.send_response(503)
                    else:
                        doc = json.loads(body)
                        if doc["event_id"] in receiver.events:
                            receiver.duplicates += 1
                        receiver.events[doc["event_id"]] = doc
                        self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/milepost"


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver("whsec-" + secrets.token_hex(16), fail_first=2)
    r.start()
    yield r
    r.stop()


def test_webhooks_signed_retried_and_delivered_once(
    ingest: Proc, api_url: str, cli: Callable[..., str], db: psycopg.Connection,
    tmp_path: Path, receiver: Receiver,
) -> None:  # fmt: skip
    tag = secrets.token_hex(3).upper()
    van, stop, hub = f"WH{tag}-VAN", f"WH{tag}-S", f"WH{tag}-HUB"
    mine, other = f"WH{tag}-P1", f"WH{tag}-P2"
    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({
        "stops": [{"stop_id": stop, "kind": "delivery", "radius_m": 40,
                   "geofence": {"type": "Point", "coordinates": [LON, LAT]}},
                  {"stop_id": hub, "kind": "hub", "radius_m": 60,
                   "geofence": {"type": "Point", "coordinates": [LON, LAT - 0.02]}}],
        "vehicles": [{"vehicle_id": van}],
        "parcels": [{"tracking_number": mine, "stop_id": stop,
                     "promised_by": (now - timedelta(hours=1)).isoformat()},
                    {"tracking_number": other, "stop_id": stop}],
        "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": [stop]}],
    }))  # fmt: skip
    password = cli("devices", "add", van)
    cli("manifest", "load", str(path))
    customer = cli("keys", "create", "--role", "customer")
    auth = {"Authorization": f"Bearer {customer}"}
    hook = {"url": receiver.url, "events": ["parcel.status", "exception"],
            "secret": receiver.secret.decode(), "tracking_numbers": [mine]}  # fmt: skip
    r = httpx.post(f"{api_url}/v1/webhooks", json=hook, headers=auth)
    assert r.status_code == 201, r.text
    webhook_id = r.json()["webhook_id"]
    no_numbers = {k: v for k, v in hook.items() if k != "tracking_numbers"}
    assert httpx.post(f"{api_url}/v1/webhooks", json=no_numbers, headers=auth).status_code == 422
    assert httpx.post(f"{api_url}/v1/webhooks", json={**hook, "events": ["gossip"]},
                      headers=auth).status_code == 422  # fmt: skip
    listed = httpx.get(f"{api_url}/v1/webhooks", headers=auth).json()["webhooks"]
    assert [w["webhook_id"] for w in listed] == [webhook_id]
    time.sleep(5.5)  # the plan is re-read every 5 s

    # the van reports from far away: its first ETA is past the promise (an exception)
    fixes = [orjson.dumps({"ts": (now + timedelta(seconds=k)).isoformat(), "lon": LON,
                           "lat": LAT - 0.05, "speed": 8.0}) for k in range(0, 40, 5)]
    assert pub(van, password, f"fleet/{van}/gps", fixes).returncode == 0
    wait_until(lambda: len(receiver.events) >= 2, timeout=30,
               what="the LATE exception as parcel.status and exception")  # fmt: skip
    # the receiver goes away; a proof of delivery arrives meanwhile, for both parcels
    receiver.stop()
    for tn in (mine, other):
        pod = orjson.dumps({"ts": (now + timedelta(seconds=45)).isoformat(),
                            "tracking_number": tn, "outcome": "delivered"})
        assert pub(van, password, f"fleet/{van}/pod", [pod]).returncode == 0
    wait_until(lambda: db.execute("SELECT count(*) FROM webhook_outbox WHERE webhook_id = %s"
                                  " AND attempts > 0 AND delivered_at IS NULL",
                                  (webhook_id,)).fetchone() == (1,), timeout=20,
               what="a failed attempt while the receiver is down")  # fmt: skip
    receiver.start()  # back, on the same port
    wait_until(lambda: len(receiver.events) >= 3, timeout=40, what="the delivery after the restart")
    time.sleep(2.0)  # anything sent twice would show now

    types = sorted((e["type"], e["data"]["sub_status"]) for e in receiver.events.values())
    assert types == [("exception", "Exception_LATE"), ("parcel.status", "Delivered_001"),
                     ("parcel.status", "Exception_LATE")]  # fmt: skip
    assert {e["data"]["tracking_number"] for e in receiver.events.values()} == {mine}
    assert receiver.bad_signatures == 0 and receiver.duplicates == 0
    assert receiver.requests >= 5  # two refused with 503, then three delivered
    for e in receiver.events.values():
        assert set(e) == {"event_id", "type", "occurred_at", "data"}
        assert "vehicle_id" not in e["data"]
    log = httpx.get(f"{api_url}/v1/webhooks/{webhook_id}/deliveries", headers=auth).json()
    got = log["deliveries"]
    assert len(got) == 3 and all(d["delivered_at"] for d in got)
    assert sum(d["attempts"] for d in got) >= 5 and any(d["last_status"] == 204 for d in got)
    # another customer sees none of it; deleting stops it
    other_key = cli("keys", "create", "--role", "customer")
    other_auth = {"Authorization": f"Bearer {other_key}"}
    assert httpx.get(f"{api_url}/v1/webhooks/{webhook_id}/deliveries",
                     headers=other_auth).status_code == 404  # fmt: skip
    assert httpx.delete(f"{api_url}/v1/webhooks/{webhook_id}", headers=other_auth
                        ).status_code == 404  # fmt: skip
    assert httpx.delete(f"{api_url}/v1/webhooks/{webhook_id}", headers=auth).status_code == 204
    assert httpx.get(f"{api_url}/v1/webhooks", headers=auth).json()["webhooks"] == []


def test_dead_and_slow_receivers_delay_no_one_else(
    ingest: Proc, db: psycopg.Connection, receiver: Receiver
) -> None:
    """Backlogs for a receiver that never answers in time, one that refuses connections
    and one whose name does not resolve are ahead of a healthy receiver's one event in
    the outbox: it is still delivered at once, and the dead ones are paused, not hammered."""
    receiver.fail_left = 0
    stall = threading.Event()

    class Tarpit(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            stall.wait(15.0)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    tarpit = ThreadingHTTPServer(("127.0.0.1", free_port()), Tarpit)
    threading.Thread(target=tarpit.serve_forever, daemon=True).start()
    dead = [f"http://127.0.0.1:{tarpit.server_port}/slow", f"http://127.0.0.1:{free_port()}/x",
            "http://no-such-receiver.invalid/hook"]  # fmt: skip
    hooks = []
    try:
        for url in [*dead, receiver.url]:
            secret = receiver.secret.decode() if url == receiver.url else "s" * 24
            hooks.append(db.execute(
                "INSERT INTO webhook (url, events, secret, tracking_numbers)"
                " VALUES (%s, '{parcel.status}', %s, '{WH-NONE}') RETURNING webhook_id",
                (url, secret)).fetchone()[0])  # fmt: skip
        with db.cursor() as cur:  # 300 events each for the dead, due a minute before
            cur.executemany(
                "INSERT INTO webhook_outbox (webhook_id, event_id, type, body, next_attempt_at)"
                " VALUES (%s, %s, 'parcel.status', %s, now() - interval '1 minute')",
                [(w, e, orjson.dumps({"event_id": str(e), "type": "parcel.status",
                                      "occurred_at": "2026-12-02T08:00:00Z", "data": {}}).decode())
                 for w in hooks[:3] for e in (uuid.uuid4() for _ in range(300))])  # fmt: skip
            mine = uuid.uuid4()
            cur.execute(
                "INSERT INTO webhook_outbox (webhook_id, event_id, type, body)"
                " VALUES (%s, %s, 'parcel.status', %s)",
                (hooks[3], mine, orjson.dumps({"event_id": str(mine), "type": "parcel.status",
                                               "occurred_at": "2026-12-02T08:00:00Z",
                                               "data": {}}).decode()))  # fmt: skip
        db.commit()
        t0 = time.monotonic()
        wait_until(lambda: str(mine) in receiver.events, timeout=15,
                   what="the healthy receiver's event behind 900 for dead ones")  # fmt: skip
        took = time.monotonic() - t0
        time.sleep(3.0)
        tried = dict(db.execute(
            "SELECT webhook_id, count(*) FILTER (WHERE attempts > 0 OR next_attempt_at > now())"
            " FROM webhook_outbox"
            " WHERE webhook_id = ANY (%s) GROUP BY 1", (hooks[:3],)).fetchall())  # fmt: skip
        # each dead receiver got its first few tries (or has them in flight), then a paused
        # probe or two
        assert all(0 < tried[w] <= 12 for w in hooks[:3]), (tried, took)
    finally:
        stall.set()
        tarpit.shutdown()
        tarpit.server_close()
        db.execute("UPDATE webhook SET deleted_at = now() WHERE webhook_id = ANY (%s)", (hooks,))
        db.commit()
