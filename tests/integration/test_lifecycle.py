"""A van's morning end to end through milepost ingest: loaded at a dock door read by a real
serial gate (a pseudo-terminal), out of the hub, a delivery seen by its cargo reader, a
proof of delivery, a warm cargo space, a failed attempt, a mis-load and a parcel left
behind; then the parcel as a customer sees it through the API."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import psycopg

from api.routes.epcis import epc_uri
from devices.records import GPS_FIX_DTYPE, TagRead
from devices.rfid import ascii
from ingest.batch import FixFrame
from ingest.hold import BacklogHold
from tests.api.test_epcis import errors, load_validator
from tests.integration.conftest import (
    Proc,
    Pty,
    cli_with,
    forget_session,
    scratch_database,
    wait_until,
)
from tests.integration.test_gps_slice import pub
from tests.integration.test_serial import epcs

HUB_LON, HUB_LAT = 13.4700, 52.5700
DLAT = 0.0054  # 600 m north
DLON = 0.0088  # 600 m east at this latitude
HUB_RING = [[HUB_LON - 0.0013, HUB_LAT - 0.0008], [HUB_LON + 0.0013, HUB_LAT - 0.0008],
            [HUB_LON + 0.0013, HUB_LAT + 0.0008], [HUB_LON - 0.0013, HUB_LAT + 0.0008],
            [HUB_LON - 0.0013, HUB_LAT - 0.0008]]  # fmt: skip


@contextlib.contextmanager
def own_ingest(name: str, env: dict[str, str]) -> Iterator[Own]:
    """A scratch database, migrated, and the environment of an ingest of its own (its own
    MQTT client id, whose session is forgotten after)."""
    with scratch_database(f"milepost_{name}") as url, psycopg.connect(url, autocommit=True) as db:
        client = f"milepost-{name}-{secrets.token_hex(3)}"
        extra = {"MILEPOST_DATABASE_URL": url, "MILEPOST_MQTT_CLIENT_ID": client}
        cli = cli_with({**env, **extra})
        cli("migrate")
        try:
            yield Own(db, client, extra, cli)
        finally:
            forget_session(client)


@dataclass
class Own:
    db: psycopg.Connection
    client: str
    extra: dict[str, str]
    cli: Callable[..., str]


def status_of(db: psycopg.Connection, tn: str) -> tuple[str, str | None, str | None]:
    row = db.execute("SELECT status, sub_status, vehicle_id FROM parcel_latest"
                     " WHERE tracking_number = %s", (tn,)).fetchone()  # fmt: skip
    assert row is not None
    return row[0], row[1], row[2]


def test_a_vans_morning(ingest: Proc, api_url: str, cli: Callable[..., str],
                        db: psycopg.Connection, pty: Pty, tmp_path: Path) -> None:  # fmt: skip
    tag = secrets.token_hex(3).upper()
    van, gate, hub, dock, s1, s2 = (f"LC{tag}-{x}" for x in ("VAN", "G", "HUB", "DOCK", "S1",
                                                               "S2"))  # fmt: skip
    van_epc, e1, e2, e3, e4, e5 = epcs(6)
    tn = {k: f"LC{tag}P{k}" for k in range(1, 6)}
    now = datetime.now(UTC).replace(microsecond=0)
    point = {"type": "Point"}
    manifest = {
        "stops": [
            {"stop_id": hub, "kind": "hub",
             "geofence": {"type": "Polygon", "coordinates": [HUB_RING]}},
            {"stop_id": dock, "kind": "dock", "hub_stop_id": hub, "radius_m": 8,
             "geofence": {**point, "coordinates": [HUB_LON, HUB_LAT]}},
            {"stop_id": s1, "kind": "delivery", "radius_m": 40,
             "geofence": {**point, "coordinates": [HUB_LON, HUB_LAT + DLAT]}},
            {"stop_id": s2, "kind": "delivery", "radius_m": 40,
             "geofence": {**point, "coordinates": [HUB_LON + DLON, HUB_LAT + DLAT]}},
            {"stop_id": f"{s2}-X", "kind": "delivery", "radius_m": 40,
             "geofence": {**point, "coordinates": [HUB_LON - DLON, HUB_LAT]}},
        ],
        "vehicles": [{"vehicle_id": van, "epc": van_epc}],
        "gates": [{"gate_id": gate, "dock_stop_id": dock, "url": str(pty.link),
                   "protocol": "ascii", "antennas": {"1": "hall", "2": "dock"}}],
        "parcels": [
            {"tracking_number": tn[1], "epc": e1, "stop_id": s1},
            {"tracking_number": tn[2], "epc": e2, "stop_id": s2, "temp_min_c": 2,
             "temp_max_c": 8},
            {"tracking_number": tn[3], "epc": e3, "stop_id": s1},
            {"tracking_number": tn[4], "epc": e4, "stop_id": f"{s2}-X"},  # no route serves it
            {"tracking_number": tn[5], "epc": e5, "stop_id": s2,
             "promised_by": (now - timedelta(hours=1)).isoformat()},
        ],
        "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": [s1, s2]}],
    }  # fmt: skip
    path = tmp_path / "day.json"
    path.write_text(json.dumps(manifest))
    password = cli("devices", "add", van)
    cli("manifest", "load", str(path))
    ingest.wait_for(f"gate {gate}: reading", timeout=15)
    time.sleep(5.5)  # the plan is re-read every 5 s

    def fix(dt_s: int, lon: float, lat: float, speed: float) -> bytes:
        return orjson.dumps({"ts": (now + timedelta(seconds=dt_s)).isoformat(), "lon": lon,
                             "lat": lat, "speed": speed})  # fmt: skip

    def gps(lines: list[bytes]) -> None:
        assert pub(van, password, f"fleet/{van}/gps", lines).returncode == 0

    def msg(kind: str, dt_s: int, **body: object) -> bytes:
        return orjson.dumps({"ts": (now + timedelta(seconds=dt_s)).isoformat(), **body})

    # parked at the dock door around now (the gate stamps reads with the host clock)
    gps([fix(k, HUB_LON, HUB_LAT, 0.0) for k in range(-60, 125, 5)])
    time.sleep(1.0)

    def carry(epc: str, first: int, then: int) -> None:
        for k in range(16):
            antenna = first if k < 8 else then
            pty.write(ascii.encode_line(TagRead(epc, antenna=antenna, rssi=-60.0, rssi_dbm=True)))
            time.sleep(0.04)

    pty.write(ascii.encode_line(TagRead(van_epc, antenna=2, rssi=-50.0, rssi_dbm=True)))
    carry(e1, 1, 2)  # hall -> dock: loaded
    carry(e4, 1, 2)  # loaded onto a van that does not serve its stop
    carry(e3, 2, 1)  # dock -> hall: read at the hub, never loaded
    wait_until(lambda: db.execute("SELECT count(*) FROM gate_pass WHERE gate_id = %s",
                                  (gate,)).fetchone() == (4,), timeout=20,
               what="four passes: three parcels and the van's own tag")  # fmt: skip
    out_rows = db.execute("SELECT epc, vehicle_id FROM gate_pass WHERE gate_id = %s AND"
                          " direction = 'out'", (gate,)).fetchall()  # fmt: skip
    passes = {r[0]: r[1] for r in out_rows}
    assert passes == {e1: van, e4: van}
    wait_until(lambda: status_of(db, tn[1])[1] == "InTransit_007", what="P1 loaded")
    assert status_of(db, tn[1]) == ("InTransit", "InTransit_007", van)
    assert status_of(db, tn[4]) == ("Exception", "Exception_MISLOAD", van)
    assert status_of(db, tn[3]) == ("InTransit", "InTransit_002", None)
    assert status_of(db, tn[5])[1] == "Exception_LATE"  # promised an hour ago

    cargo = f"fleet/{van}/cargo"
    aboard = [e1, e2, e4, e5]
    assert pub(van, password, cargo, [msg("cargo", 110, epcs=aboard)]).returncode == 0
    wait_until(lambda: status_of(db, tn[2])[2] == van, what="P2 bound by the cargo reader")
    assert status_of(db, tn[2])[1] == "InTransit_007"

    # out of the hub and north to S1 at 10 m/s, two minutes there, east to S2, two minutes
    # there, then on for two and a half minutes
    drive = [fix(125 + 5 * k, HUB_LON, HUB_LAT + k * DLAT / 12, 10.0) for k in range(1, 13)]
    at_s1 = [fix(185 + 5 * k, HUB_LON, HUB_LAT + DLAT, 0.0) for k in range(1, 25)]
    to_s2 = [fix(305 + 5 * k, HUB_LON + k * DLON / 12, HUB_LAT + DLAT, 10.0) for k in range(1, 13)]
    at_s2 = [fix(365 + 5 * k, HUB_LON + DLON, HUB_LAT + DLAT, 0.0) for k in range(1, 25)]
    on = [fix(485 + 5 * k, HUB_LON + DLON + k * 0.0008, HUB_LAT + DLAT, 10.0)
          for k in range(1, 31)]  # fmt: skip
    scans = ([msg("cargo", t, epcs=aboard) for t in range(130, 200, 10)]
             + [msg("cargo", t, epcs=[e2, e4, e5]) for t in range(200, 490, 10)]
             + [msg("cargo", t, epcs=[e4, e5]) for t in range(490, 640, 10)])
    gps(drive + at_s1)
    assert pub(van, password, cargo, scans[:20]).returncode == 0  # to T+320
    sensor = [msg("sensor", 250, temp_c=12.5, humidity=40)]
    assert pub(van, password, f"fleet/{van}/sensor", sensor).returncode == 0
    gps(to_s2 + at_s2)
    pod = msg("pod", 400, tracking_number=tn[2], outcome="delivered", signed_by="A. Smith")
    assert pub(van, password, f"fleet/{van}/pod", [pod]).returncode == 0
    assert pub(van, password, cargo, scans[20:]).returncode == 0
    gps(on)

    wait_until(lambda: status_of(db, tn[5])[0] == "AttemptFail", timeout=20,
               what="P5 failed: the van left S2 with it aboard")  # fmt: skip
    assert status_of(db, tn[1]) == ("Delivered", "Delivered_001", van)
    assert status_of(db, tn[2]) == ("Delivered", "Delivered_003", van)
    assert status_of(db, tn[3]) == ("Exception", "Exception_LEFT_BEHIND", None)
    assert status_of(db, tn[4]) == ("Exception", "Exception_MISLOAD", van)

    def timeline(t: str) -> list[str]:
        return [r[0] for r in db.execute("SELECT sub_status FROM parcel_event WHERE"
                                         " tracking_number = %s ORDER BY time", (t,))]  # fmt: skip

    assert timeline(tn[1]) == ["InTransit_002", "InTransit_007", "OutForDelivery_001",
                               "Delivered_001"]  # fmt: skip
    assert timeline(tn[2]) == ["InTransit_007", "OutForDelivery_001", "Exception_COLD_CHAIN",
                               "Delivered_003"]  # fmt: skip
    # LATE is stamped by the first ETA refresh, whichever batch of fixes that came in
    late = timeline(tn[5])
    assert late.count("Exception_LATE") == 1
    assert [s for s in late if s != "Exception_LATE"] == ["InTransit_007", "OutForDelivery_001",
                                                          "AttemptFail_001"]  # fmt: skip
    delivered = db.execute("SELECT time, stop_id, lon, lat FROM parcel_event WHERE"
                           " tracking_number = %s AND status = 'Delivered'",
                           (tn[1],)).fetchone()  # fmt: skip
    assert delivered is not None
    # the first inventory that missed it, with the van at S1
    assert delivered[0] == now + timedelta(seconds=200) and delivered[1] == s1
    assert abs(delivered[3] - (HUB_LAT + DLAT)) < 1e-6
    n_events = db.execute("SELECT count(*) FROM parcel_event WHERE tracking_number LIKE %s",
                          (f"LC{tag}%",)).fetchone()  # fmt: skip
    eta = db.execute("SELECT eta, eta_earliest, eta_latest FROM parcel_latest"
                     " WHERE tracking_number = %s", (tn[5],)).fetchone()  # fmt: skip
    assert eta is not None and eta[1] <= eta[0] <= eta[2]
    assert db.execute("SELECT count(*) FROM eta_snapshot WHERE tracking_number = %s",
                      (tn[5],)).fetchone()[0] >= 1  # type: ignore[index]

    # the dispatcher's queue: what needs a decision, with its evidence
    dispatcher = cli("keys", "create", "--role", "dispatcher")
    queue = httpx.get(f"{api_url}/v1/exceptions", params={"since": now.isoformat()},
                      headers={"Authorization": f"Bearer {dispatcher}"}).json()  # fmt: skip
    mine = {e["tracking_number"]: e for e in queue["exceptions"] if e["tracking_number"]
            .startswith(f"LC{tag}")}  # fmt: skip
    assert {k: v["sub_status"] for k, v in mine.items()} == {
        tn[3]: "Exception_LEFT_BEHIND", tn[4]: "Exception_MISLOAD", tn[5]: "AttemptFail_001"}
    assert mine[tn[4]]["detail"]["evidence"] == "gate" and mine[tn[4]]["vehicle_id"] == van
    customer_key = cli("keys", "create", "--role", "customer")
    assert httpx.get(f"{api_url}/v1/exceptions", headers={
        "Authorization": f"Bearer {customer_key}"}).status_code == 403

    # what the customer sees: no van, the timeline, the status
    key = cli("keys", "create", "--role", "customer")
    body = httpx.get(f"{api_url}/v1/parcels/{tn[1]}",
                     headers={"Authorization": f"Bearer {key}"}).json()  # fmt: skip
    assert body["status"] == "Delivered" and body["vehicle_id"] is None
    assert [e["status"] for e in body["timeline"]] == ["InTransit", "InTransit",
                                                      "OutForDelivery", "Delivered"]
    assert all(e["vehicle_id"] is None for e in body["timeline"])
    # the journey as EPCIS 2.0: valid against GS1's schema, passes, loadings, deliveries
    r = httpx.get(f"{api_url}/v1/epcis/events", params={"since": now.isoformat()},
                  headers={"Authorization": f"Bearer {dispatcher}"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "application/ld+json"
    doc = r.json()
    assert errors(load_validator(), doc) == []
    urn1 = epc_uri(e1)
    mine_events = [e for e in doc["epcisBody"]["eventList"]
                   if urn1 in e.get("epcList", []) + e.get("childEPCs", [])]  # fmt: skip
    assert [(e["type"], e.get("bizStep")) for e in mine_events] == [
        ("ObjectEvent", "departing"), ("AggregationEvent", "loading"),
        ("ObjectEvent", "accepting")]  # fmt: skip
    assert mine_events[1]["parentID"] == epc_uri(van_epc)

    # replaying the same messages stores no event twice
    gps(on)
    assert pub(van, password, cargo, scans[20:]).returncode == 0
    time.sleep(2.0)
    assert db.execute("SELECT count(*) FROM parcel_event WHERE tracking_number LIKE %s",
                      (f"LC{tag}%",)).fetchone() == n_events  # fmt: skip


def test_kill_9_between_leaving_a_stop_and_the_attempts_grace_still_fails_the_attempt(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """The parcel stage's state between events (an attempt waiting out its grace) is in
    ingest_state, written with the batch that changed it: an ingest killed with SIGKILL
    in the grace is followed by one that reports the failed attempt all the same."""
    with own_ingest("attempt", env) as own:
        db, extra, cli = own.db, own.extra, own.cli
        tag = secrets.token_hex(3).upper()
        van, hub, s1 = f"AT{tag}-VAN", f"AT{tag}-HUB", f"AT{tag}-S1"
        (e1,) = epcs(1)
        tn = f"AT{tag}P1"
        manifest = {
            "stops": [{"stop_id": hub, "kind": "hub",
                       "geofence": {"type": "Polygon", "coordinates": [HUB_RING]}},
                      {"stop_id": s1, "kind": "delivery", "radius_m": 40,
                       "geofence": {"type": "Point", "coordinates": [HUB_LON, HUB_LAT + DLAT]}}],
            "vehicles": [{"vehicle_id": van}],
            "parcels": [{"tracking_number": tn, "epc": e1, "stop_id": s1}],
            "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": [s1]}],
        }  # fmt: skip
        path = tmp_path / "day.json"
        path.write_text(json.dumps(manifest))
        password = cli("devices", "add", van)
        first = spawn("ingest", extra_env=extra)
        first.wait_for("subscribed to")
        cli("manifest", "load", str(path))
        first.wait_for("plan: 1 parcels")
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

        def at(dt_s: int, **body: object) -> bytes:
            return orjson.dumps({"ts": (now + timedelta(seconds=dt_s)).isoformat(), **body})

        def send(kind: str, lines: list[bytes]) -> None:
            assert pub(van, password, f"fleet/{van}/{kind}", lines).returncode == 0

        # loaded (its cargo reader sees the parcel), out of the hub, 2 min at S1, and away
        # with the parcel still aboard
        send("cargo", [at(t, epcs=[e1]) for t in range(0, 300, 10)])
        send("gps", [at(t, lon=HUB_LON, lat=HUB_LAT, speed=0.0) for t in range(0, 60, 5)]
             + [at(60 + 5 * k, lon=HUB_LON, lat=HUB_LAT + k * DLAT / 12, speed=10.0)
                for k in range(1, 13)]
             + [at(120 + 5 * k, lon=HUB_LON, lat=HUB_LAT + DLAT, speed=0.0)
                for k in range(1, 25)]
             + [at(240 + 5 * k, lon=HUB_LON + k * 0.0008, lat=HUB_LAT + DLAT, speed=10.0)
                for k in range(1, 12)])  # fmt: skip
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM geofence_event WHERE stop_id = %s AND kind = 'exit'",
            (s1,)).fetchone() == (1,), what="the van leaving S1")  # fmt: skip
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM ingest_state, jsonb_each(state -> 'attempts')"
            " WHERE key = %s", (van,)).fetchone() == (1,),
            what="the pending attempt in ingest_state")  # fmt: skip
        assert status_of(db, tn) == ("OutForDelivery", "OutForDelivery_001", van)
        first.proc.kill()
        first.proc.wait(10)

        second = spawn("ingest", extra_env=extra)
        second.wait_for("parcel stage: restored 1 attempts")
        second.wait_for("subscribed to")
        # the van's clock moves past the grace (2 min after it left)
        send("gps", [at(300 + 5 * k, lon=HUB_LON + (11 + k) * 0.0008, lat=HUB_LAT + DLAT,
                        speed=10.0) for k in range(1, 30)])  # fmt: skip
        wait_until(lambda: status_of(db, tn)[0] == "AttemptFail", what="the failed attempt")
        assert status_of(db, tn) == ("AttemptFail", "AttemptFail_001", van)
        second.stop()


def test_ingest_state_rows_it_cannot_read_are_refused_with_a_warning_and_ingest_runs(
    spawn: Callable[..., Proc], env: dict[str, str], tmp_path: Path,
) -> None:
    """A row of ingest_state that this version cannot read (another version wrote it, or
    it was edited by hand) must not stop ingest, nor start it in a loop of crashes: each
    is refused whole with a warning, the plan loads and fixes are stored."""
    with own_ingest("badstate", env) as own:
        db, client, extra, cli = own.db, own.client, own.extra, own.cli
        tag = secrets.token_hex(3).upper()
        van, hub = f"BS{tag}-VAN", f"BS{tag}-HUB"
        path = tmp_path / "day.json"
        path.write_text(json.dumps({
            "stops": [{"stop_id": hub, "kind": "hub",
                       "geofence": {"type": "Polygon", "coordinates": [HUB_RING]}}],
            "vehicles": [{"vehicle_id": van}],
            "routes": [{"vehicle_id": van, "hub_stop_id": hub, "stop_ids": []}]}))  # fmt: skip
        cli("manifest", "load", str(path))
        password = cli("devices", "add", van)
        bad = {"parcels": {"v": 99},
               "geofences": {"v": 1, "pairs": 5},
               # times past any datetime, and no estimator
               "etas": {"version": 1, "last_fix": {van: 10**20}, "eta_at": {}, "eta_last": {}},
               "clocks": {"offsets_us": {van: 1.5}},
               "held": {"version": 2, "vans": {}}}
        for name, doc in bad.items():
            db.execute("INSERT INTO ingest_state (instance, name, state) VALUES (%s, %s, %s)",
                       (client, name, json.dumps(doc)))  # fmt: skip
        ing = spawn("ingest", extra_env=extra)
        try:
            ing.wait_for("subscribed to")
            ing.wait_for("plan: 0 parcels")
            for what in ("the parcel stage's state", "the geofence visits", "the ETA estimator",
                         "the vans' clock offsets", "the late data held back"):
                assert f"cannot restore {what}" in ing.text(), ing.text()
            t = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
            fix = orjson.dumps({"ts": t.isoformat(), "lat": HUB_LAT, "lon": HUB_LON})
            assert pub(van, password, f"fleet/{van}/gps", [fix]).returncode == 0
            wait_until(lambda: db.execute("SELECT count(*) FROM gps_fix WHERE vehicle_id = %s",
                                          (van,)).fetchone() == (1,), what="the fix")  # fmt: skip
            assert ing.proc.poll() is None
        finally:
            ing.stop()


def test_a_vans_clock_offset_outlives_a_restart(spawn: Callable[..., Proc], env: dict[str, str],
                                                 tmp_path: Path) -> None:  # fmt: skip
    """The clock offsets ingest learnt are in ingest_state: started again, it stores the
    fixes of a van whose clock is 10 minutes ahead at the time they happened at once, with
    the van's own time in device_time; a van whose clock is right, as it says."""
    with own_ingest("clocks", env) as own:
        db, client, extra, cli = own.db, own.client, own.extra, own.cli
        tag = secrets.token_hex(3).upper()
        fast, right = f"CK{tag}-FAST", f"CK{tag}-RIGHT"
        password = {van: cli("devices", "add", van) for van in (fast, right)}
        db.execute("INSERT INTO ingest_state (instance, name, state) VALUES (%s, 'clocks', %s)",
                   (client, json.dumps({"offsets_us": {fast: 600_000_000}})))  # fmt: skip
        ing = spawn("ingest", extra_env=extra)
        try:
            ing.wait_for("subscribed to")
            ing.wait_for(f"clocks: restored the offsets of 1 vans whose clock is off ({fast})")
            t = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
            for van, ts in ((fast, t + timedelta(minutes=10)), (right, t)):
                fix = orjson.dumps({"ts": ts.isoformat(), "lat": HUB_LAT, "lon": HUB_LON})
                assert pub(van, password[van], f"fleet/{van}/gps", [fix]).returncode == 0
            rows: dict[str, tuple[datetime, datetime | None]] = {}

            def stored() -> bool:
                rows.update((v, (a, b)) for v, a, b in db.execute(
                    "SELECT vehicle_id, time, device_time FROM gps_fix WHERE vehicle_id IN"
                    " (%s, %s)", (fast, right)))  # fmt: skip
                return len(rows) == 2

            wait_until(stored, what="both fixes")
            assert rows == {fast: (t, t + timedelta(minutes=10)), right: (t, None)}
        finally:
            ing.stop()


def test_late_data_held_at_a_crash_goes_to_the_stages_after_the_restart(
    spawn: Callable[..., Proc], env: dict[str, str],
) -> None:
    """What the hold kept back (ingest/hold.py) is in ingest_state: the next ingest takes
    it, and lets it go by its own clock, with no message coming."""
    with own_ingest("held", env) as own:
        van = f"HD{secrets.token_hex(3).upper()}-VAN"
        t = time.time_ns() // 1000 - 1200 * 1_000_000
        hold = BacklogHold()
        fixes = np.zeros(3, GPS_FIX_DTYPE)
        fixes["ts_us"] = [t, t + 1_000_000, t + 2_000_000]
        fixes["lat_deg"], fixes["lon_deg"] = HUB_LAT, HUB_LON
        got = np.full(3, t + 1200 * 1_000_000, np.int64)
        hold.admit(FixFrame(fixes, np.zeros(3, np.int32), got, [van]), np.ones(3, np.bool_),
                   [], [], [], int(got[0]))  # fmt: skip
        own.db.execute("INSERT INTO ingest_state (instance, name, state) VALUES (%s, 'held', %s)",
                       (own.client, json.dumps(hold.state())))  # fmt: skip
        ing = spawn("ingest", extra_env=own.extra)
        try:
            ing.wait_for("held: restored 3 late fixes of 1 vans")
            ing.wait_for(f"{van}: its late data goes to the stages in time order", timeout=5)
            # and the next batch wrote the hold empty
            wait_until(lambda: own.db.execute(
                "SELECT state -> 'vans' FROM ingest_state WHERE instance = %s AND name = 'held'",
                (own.client,)).fetchone() == ({},), what="the held row emptied")  # fmt: skip
        finally:
            ing.stop()
