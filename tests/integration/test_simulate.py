"""`milepost simulate` plays a seeded day live into the running ingest: vans over MQTT under
their own accounts, a dock-door reader on a pseudo-terminal; what it planted comes out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg

from tests.integration.conftest import ROOT, Proc, wait_until


def test_a_simulated_morning_loads_drives_and_is_tracked(
    ingest: Proc, env: dict[str, str], db: psycopg.Connection, cli: Callable[..., str],
) -> None:
    # from a minute before VAN-001 leaves its dock door, at twice the speed
    sim = subprocess.run(
        [sys.executable, "-m", "milepost", "simulate", "--vans", "2", "--stops", "3",
         "--gates", "1", "--rate", "1", "--seed", "5", "--speedup", "2", "--duration", "45"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
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
