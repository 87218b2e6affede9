"""A seeded city delivery day, with its ground truth: what happened, so tests and
benchmarks can score what milepost inferred.

:func:`make_day` plans, in event time from ``start_us``:

1. **Linehaul unload** (first ``unload_s``): every parcel of the day is carried into the
   hub through a random dock door (``"in"``): read at the hub.
2. **Loading**: vans wait in the hub's yard and take turns at the dock doors (``docks``
   of them, one gate each). A van parks at its dock, its own tag read now and then by
   the gate, and its parcels are carried through the door one by one (``"out"``, hall
   antenna then dock antenna).
3. **The tour**: out of the hub, along the street grid (Manhattan legs, the detour real
   roads impose) to each of its stops in order, at a speed that varies per leg (traffic),
   a dwell (service time) at each stop, and back to the hub. GPS fixes every
   ``fix_every_s`` with Gaussian noise; the cargo reader's inventory every
   ``cargo_every_s`` (each tag missed with probability ``cargo_miss``); the cargo space
   temperature every ``sensor_every_s``.
4. **At a stop** the driver takes the stop's parcels out (they leave the inventory) and,
   for a share of them, sends a proof of delivery.

Faults, each drawn per parcel (or per van) with its rate, and recorded in the truth:

- ``misload``: loaded onto another van, one that leaves the hub earlier and does not
  serve the parcel's stop (``Exception_MISLOAD``);
- ``left_behind``: never loaded; its van leaves without it (``Exception_LEFT_BEHIND``);
- ``wrong_drop``: taken out at the stop before its own (``Exception_WRONG_DROP``);
- ``failed``: nobody home; it stays aboard, and half the time the driver sends a failed
  proof (``AttemptFail``);
- ``warm``: a van whose cargo space warms to about 11 C for ``warm_s`` mid-tour: every
  cold parcel (range 2..8 C) aboard then is ``Exception_COLD_CHAIN``;
- ``late``: promised ``late_by_s`` before its true arrival (``Exception_LATE``); every
  other parcel is promised at least an hour after it.

Everything is pure NumPy and the standard library; the same seed gives the same day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devices.fleet import CargoScan, ProofOfDelivery, SensorReading
from devices.records import GPS_FIX_DTYPE, US_PER_S
from simulators.gates import GateSpec, PlannedCarry, parcel_epcs, plan_carry, plan_parked
from simulators.scenario import DEFAULT_HUB, EARTH_M_PER_DEG

HUB_HALF_M = 60.0
DOCK_Y_M = -HUB_HALF_M + 5.0
DOCK_RADIUS_M = 8.0
STOP_RADIUS_M = 35.0


@dataclass(frozen=True, slots=True)
class DayConfig:
    vans: int = 10
    stops_per_van: int = 16
    parcels_per_stop: tuple[int, int] = (1, 2)
    docks: int = 3
    protocols: tuple[str, ...] = ("mercury", "ascii", "mercury")
    block_m: float = 150.0
    radius_blocks: int = 25
    unload_s: float = 600.0
    load_gap_s: float = 15.0  # between two parcels carried onto a van
    speed_mps: tuple[float, float] = (8.0, 12.0)  # a van's free-flow speed
    traffic: tuple[float, float] = (0.6, 1.1)  # per leg, times the free-flow speed
    service_s: tuple[float, float] = (60.0, 200.0)
    fix_every_s: float = 5.0
    cargo_every_s: float = 15.0
    cargo_miss: float = 0.03
    sensor_every_s: float = 60.0
    noise_m: float = 3.0
    pod_share: float = 0.7
    cold_share: float = 0.15
    misload: float = 0.02
    left_behind: float = 0.02
    wrong_drop: float = 0.02
    failed: float = 0.05
    warm: float = 0.2
    warm_s: float = 720.0
    late: float = 0.05
    late_by_s: tuple[float, float] = (1800.0, 3600.0)
    hub: tuple[float, float] = DEFAULT_HUB


@dataclass(slots=True)
class Truth:
    """What really happened."""

    arrivals_us: dict[tuple[str, str], int] = field(default_factory=dict)  # (van, stop)
    bindings: dict[str, str] = field(default_factory=dict)  # tracking number -> van it rode
    exceptions: dict[str, set[str]] = field(default_factory=dict)  # tn -> sub-statuses
    delivered: dict[str, int] = field(default_factory=dict)  # tn -> time taken out at its stop
    attempts: set[str] = field(default_factory=set)  # failed attempts

    def exception_pairs(self) -> set[tuple[str, str]]:
        return {(tn, kind) for tn, kinds in self.exceptions.items() for kind in kinds}


@dataclass(slots=True)
class Day:
    config: DayConfig
    start_us: int
    manifest: dict[str, Any]
    gates: list[GateSpec]
    fixes: dict[str, NDArray[Any]]  # van -> GPS_FIX_DTYPE, time order
    carries: list[PlannedCarry]  # times in seconds from start_us
    cargo: list[tuple[str, CargoScan]]
    sensors: list[tuple[str, SensorReading]]
    pods: list[tuple[str, ProofOfDelivery]]
    truth: Truth
    end_us: int = 0
    departs_s: dict[str, float] = field(default_factory=dict)  # van -> leaves its dock

    def first_departure_s(self) -> float:
        return min(self.departs_s.values(), default=0.0)

    def reads(self) -> dict[str, tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64],
                                       list[str]]]:  # fmt: skip
        """Per gate, every read in time order: (ts_us, antenna, rssi dBm, EPC per read)."""
        out: dict[str, tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64],
                             list[str]]] = {}  # fmt: skip
        for g in self.gates:
            mine = [c for c in self.carries if c.carry.gate_id == g.gate_id]
            if not mine:
                continue
            ts = np.concatenate([self.start_us + np.rint(c.t_s * US_PER_S).astype(np.int64)
                                 for c in mine])  # fmt: skip
            ant = np.concatenate([c.antenna for c in mine])
            rssi = np.concatenate([c.rssi_dbm for c in mine]).astype(np.float64)
            epcs = [c.carry.epc_hex for c in mine for _ in range(len(c.t_s))]
            order = np.argsort(ts, kind="stable")
            out[g.gate_id] = (ts[order], ant[order], rssi[order], [epcs[i] for i in order])
        return out


class _Geo:
    def __init__(self, hub: tuple[float, float]) -> None:
        self.lon0, self.lat0 = hub
        self.cos0 = math.cos(math.radians(self.lat0))

    def lonlat(self, x_m: float, y_m: float) -> list[float]:
        return [round(self.lon0 + x_m / (EARTH_M_PER_DEG * self.cos0), 7),
                round(self.lat0 + y_m / EARTH_M_PER_DEG, 7)]  # fmt: skip

    def arrays(self, x: NDArray[np.float64], y: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
        return self.lon0 + x / (EARTH_M_PER_DEG * self.cos0), self.lat0 + y / EARTH_M_PER_DEG


# a small day with every planted fault: at seed 6, 3 vans and 17 parcels give all five
# exceptions and two failed attempts (the lifecycle checks of tests/integration/
# test_simulate.py and tests/ingest/test_backlog.py)
FAULTS_DAY = DayConfig(vans=3, stops_per_van=4, docks=1, fix_every_s=1.0, misload=0.08,
                       left_behind=0.08, wrong_drop=0.08, failed=0.1, warm=0.5, cold_share=0.3,
                       late=0.1)  # fmt: skip
FAULTS_DAY_SEED = 6


def make_day(config: DayConfig = DayConfig(), *, seed: int = 1,
             start_us: int | None = None) -> Day:  # fmt: skip
    """Plan a day; see the module docstring."""
    c = config
    rng = np.random.default_rng([seed, 0xDA7])
    if start_us is None:
        start_us = int(datetime.now(UTC).replace(minute=0, second=0, microsecond=0).timestamp()
                       * US_PER_S)  # fmt: skip
    geo = _Geo(c.hub)
    day_name = datetime.fromtimestamp(start_us / US_PER_S, UTC).strftime("%y%m%d")
    gates = [GateSpec(f"G-{k + 1}", c.protocols[k % len(c.protocols)], {1: "hall", 2: "dock"},
                      dock_stop_id=f"DOCK-{k + 1}") for k in range(c.docks)]  # fmt: skip
    h = HUB_HALF_M
    ring = [geo.lonlat(x, y) for x, y in ((-h, -h), (h, -h), (h, h), (-h, h), (-h, -h))]
    dock_x = [-h + (k + 1) * 2 * h / (c.docks + 1) for k in range(c.docks)]
    stops: list[dict[str, Any]] = [{"stop_id": "HUB-1", "kind": "hub", "name": "Hub",
                                    "geofence": {"type": "Polygon", "coordinates": [ring]}}]
    stops += [{"stop_id": g.dock_stop_id, "kind": "dock", "hub_stop_id": "HUB-1",
               "name": f"Dock door {k + 1}", "radius_m": DOCK_RADIUS_M,
               "geofence": {"type": "Point", "coordinates": geo.lonlat(dock_x[k], DOCK_Y_M)}}
              for k, g in enumerate(gates)]  # fmt: skip

    # stops: distinct street corners, never the hub's; each van's visited by angle
    r = c.radius_blocks
    grid = np.array([(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1)
                     if max(abs(i), abs(j)) >= 2], dtype=np.float64) * c.block_m  # fmt: skip
    need = c.vans * c.stops_per_van
    if need > len(grid):
        raise ValueError(f"{need} stops do not fit a grid of {len(grid)} corners")
    corners = grid[rng.choice(len(grid), size=need, replace=False)]
    vans = [f"VAN-{k + 1:03d}" for k in range(c.vans)]
    van_epcs = parcel_epcs(rng, c.vans, company_prefix="0614142")
    routes: dict[str, list[tuple[str, float, float]]] = {}
    for v, van in enumerate(vans):
        mine = corners[v * c.stops_per_van:(v + 1) * c.stops_per_van]
        mine = mine[np.argsort(np.arctan2(mine[:, 1], mine[:, 0]))]
        routes[van] = []
        for x, y in mine.tolist():
            sid = f"S-{len(stops) - c.docks:04d}"
            stops.append({"stop_id": sid, "kind": "delivery",
                          "name": f"{int(x // c.block_m)} / {int(y // c.block_m)} Grid St",
                          "radius_m": STOP_RADIUS_M,
                          "geofence": {"type": "Point", "coordinates": geo.lonlat(x, y)}})
            routes[van].append((sid, x, y))

    # parcels, with their faults
    counts = {(van, s[0]): int(rng.integers(c.parcels_per_stop[0], c.parcels_per_stop[1] + 1))
              for van in vans for s in routes[van]}  # fmt: skip
    epcs = iter(parcel_epcs(rng, sum(counts.values())))
    parcels: list[dict[str, Any]] = []
    owner: dict[str, str] = {}  # tn -> planned van
    stop_of: dict[str, str] = {}
    epc_of: dict[str, str] = {}
    fault: dict[str, str] = {}
    cold: set[str] = set()
    for (van, sid), n in counts.items():
        for _ in range(n):
            tn = f"MP{day_name}{len(parcels) + 1:05d}"
            owner[tn], stop_of[tn], epc_of[tn] = van, sid, next(epcs)
            u = rng.random()
            for kind in ("misload", "left_behind", "wrong_drop", "failed"):
                rate = getattr(c, kind)
                if u < rate:
                    fault[tn] = kind
                    break
                u -= rate
            if rng.random() < c.cold_share:
                cold.add(tn)
            parcels.append({"tracking_number": tn, "epc": epc_of[tn], "stop_id": sid})
    order_of = {van: {s[0]: k for k, s in enumerate(routes[van])} for van in vans}
    # a wrong drop needs a stop before its own
    for tn in [t for t, f in fault.items() if f == "wrong_drop"]:
        if order_of[owner[tn]][stop_of[tn]] == 0:
            del fault[tn]

    truth = Truth()
    fixes: dict[str, NDArray[Any]] = {}
    carries: list[PlannedCarry] = []
    cargo: list[tuple[str, CargoScan]] = []
    sensors: list[tuple[str, SensorReading]] = []
    pods: list[tuple[str, ProofOfDelivery]] = []
    gate_of_van = {van: gates[v % c.docks] for v, van in enumerate(vans)}

    # 1. linehaul unload: every parcel read into the hub
    for k, tn in enumerate(parcels_tn := [p["tracking_number"] for p in parcels]):
        t = 5.0 + c.unload_s * k / max(len(parcels_tn), 1)
        g = gates[int(rng.integers(c.docks))]
        carries.append(plan_carry(rng, g, epc_of[tn], "in", t, float(rng.uniform(1.5, 2.5)),
                                  float(rng.uniform(15, 30))))  # fmt: skip

    # 2. loading slots: vans take turns per dock; misloads ride a van that leaves earlier
    loads: dict[str, list[str]] = {van: [] for van in vans}
    for tn in parcels_tn:
        if fault.get(tn) != "left_behind":
            loads[owner[tn]].append(tn)
    t_free = [c.unload_s + 60.0] * c.docks
    depart_s: dict[str, float] = {}
    arrive_s: dict[str, float] = {}
    for v, van in enumerate(vans):
        d = v % c.docks
        arrive_s[van] = t_free[d]
        depart_s[van] = arrive_s[van] + 40.0 + c.load_gap_s * (len(loads[van]) + 3) + 30.0
        t_free[d] = depart_s[van] + 60.0
    for tn in [t for t, f in fault.items() if f == "misload"]:
        own = owner[tn]
        earlier = [w for w in vans if depart_s[w] < depart_s[own] - 60.0
                   and stop_of[tn] not in order_of[w]]  # fmt: skip
        if not earlier:
            del fault[tn]
            continue
        w = earlier[int(rng.integers(len(earlier)))]
        loads[own].remove(tn)
        loads[w].append(tn)
    for tn in parcels_tn:
        f = fault.get(tn)
        if f == "misload":
            truth.exceptions.setdefault(tn, set()).add("Exception_MISLOAD")
        elif f == "left_behind":
            truth.exceptions.setdefault(tn, set()).add("Exception_LEFT_BEHIND")
    rode = {tn: van for van in vans for tn in loads[van]}
    truth.bindings.update(rode)

    promised: dict[str, int] = {}
    end_s = 0.0
    for v, van in enumerate(vans):
        gate = gate_of_van[van]
        dock = (dock_x[v % c.docks], DOCK_Y_M)
        t0, t_dep = arrive_s[van], depart_s[van]
        carries.append(plan_parked(rng, gate, van_epcs[v], t0 + 5.0, t_dep - t0 - 10.0,
                                   rate_hz=(0.3, 0.6)))  # fmt: skip
        loaded_at: dict[str, float] = {}
        for k, tn in enumerate(loads[van]):
            t = t0 + 40.0 + c.load_gap_s * k
            carries.append(plan_carry(rng, gate, epc_of[tn], "out", t,
                                      float(rng.uniform(1.5, 2.5)), float(rng.uniform(15, 30))))
            loaded_at[tn] = t + 2.5
        # 3. the tour: waypoints (x, y, t), with the dwells
        # the van waits in the hub's yard for its turn at the dock door
        yard = (-HUB_HALF_M + 10.0 + (HUB_HALF_M * 2 - 20.0) * (v + 0.5) / c.vans, 35.0)
        pts: list[tuple[float, float, float]] = [
            (yard[0], yard[1], 0.0), (yard[0], yard[1], t0 - 40.0), (dock[0], dock[1], t0 - 30.0),
            (dock[0], dock[1], t_dep)]  # fmt: skip
        v_free = float(rng.uniform(*c.speed_mps))
        visits: list[tuple[str, float, float]] = []  # stop, arrive, leave
        here, t = dock, t_dep
        legs = [*[(s[1], s[2], s[0]) for s in routes[van]], (0.0, -20.0, "")]
        for x, y, sid in legs:
            corner = (x, here[1]) if rng.integers(2) else (here[0], y)
            speed = v_free * float(rng.uniform(*c.traffic))
            for p in (corner, (x, y)):
                t += math.dist(here, p) / speed
                here = p
                pts.append((p[0], p[1], t))
            if sid:
                service = float(rng.uniform(*c.service_s))
                visits.append((sid, t, t + service))
                truth.arrivals_us[(van, sid)] = start_us + round(t * US_PER_S)
                t += service
                pts.append((x, y, t))
        t_end = t + 120.0
        pts.append((here[0], here[1], t_end))
        end_s = max(end_s, t_end)
        px, py, pt = (np.array(a) for a in zip(*pts, strict=True))
        ts = np.arange(0.0, t_end, c.fix_every_s)
        x = np.interp(ts, pt, px) + rng.normal(0.0, c.noise_m, len(ts))
        y = np.interp(ts, pt, py) + rng.normal(0.0, c.noise_m, len(ts))
        seg = np.clip(np.searchsorted(pt, ts, side="right"), 1, len(pt) - 1)
        dt = np.maximum(pt[seg] - pt[seg - 1], 1e-9)
        vx, vy = (px[seg] - px[seg - 1]) / dt, (py[seg] - py[seg - 1]) / dt
        speed = np.hypot(vx, vy)
        arr = np.zeros(len(ts), GPS_FIX_DTYPE)
        arr["ts_us"] = start_us + np.rint(ts * US_PER_S).astype(np.int64)
        arr["lon_deg"], arr["lat_deg"] = geo.arrays(x, y)
        arr["speed_mps"] = np.maximum(speed + np.where(speed > 0, rng.normal(0, 0.3, len(ts)), 0),
                                      0.0)  # fmt: skip
        arr["heading_deg"] = np.where(speed > 0, np.degrees(np.arctan2(vx, vy)) % 360, np.nan)
        arr["acc_m"], arr["alt_m"], arr["hdop"] = 5.0, np.nan, np.nan
        arr["sats"], arr["seq"] = -1, np.arange(len(ts))
        fixes[van] = arr

        # 4. at the stops: out of the van, proofs
        out_at: dict[str, float] = {}
        stop_at = {sid: (a, b) for sid, a, b in visits}
        for tn in loads[van]:
            f, sid = fault.get(tn), stop_of[tn]
            if f == "misload" or sid not in stop_at:
                continue
            a, b = stop_at[sid]
            when = float(rng.uniform(a + 10.0, max(a + 11.0, b - 25.0)))
            if f == "failed":
                truth.attempts.add(tn)
                if rng.random() < 0.5:
                    pods.append((van, ProofOfDelivery(start_us + round(when * US_PER_S), tn,
                                                      "failed", reason="recipient not available")))
                continue
            if f == "wrong_drop":
                prev = routes[van][order_of[van][sid] - 1][0]
                a, b = stop_at[prev]
                out_at[tn] = float(rng.uniform(a + 10.0, max(a + 11.0, b - 25.0)))
                truth.exceptions.setdefault(tn, set()).add("Exception_WRONG_DROP")
                continue
            out_at[tn] = when
            truth.delivered[tn] = start_us + round(when * US_PER_S)
            if rng.random() < c.pod_share:
                pods.append((van, ProofOfDelivery(
                    start_us + round((when + float(rng.uniform(0, 5))) * US_PER_S), tn,
                    "delivered", signed_by="J. Doe" if rng.random() < 0.5 else None)))
        for ts_s in np.arange(t0 + 20.0, t_end, c.cargo_every_s).tolist():
            aboard = [epc_of[tn] for tn, at in loaded_at.items()
                      if at <= ts_s and out_at.get(tn, math.inf) > ts_s
                      and rng.random() >= c.cargo_miss]  # fmt: skip
            cargo.append((van, CargoScan(start_us + round(ts_s * US_PER_S), tuple(sorted(aboard)))))
        warm_from = (float(rng.uniform(t_dep + 600.0, max(t_dep + 601.0, t_end - c.warm_s)))
                     if rng.random() < c.warm else math.inf)  # fmt: skip
        for ts_s in np.arange(t0, t_end, c.sensor_every_s).tolist():
            warm = warm_from <= ts_s < warm_from + c.warm_s
            temp = float(rng.normal(11.0, 0.4) if warm else rng.normal(4.5, 0.4))
            sensors.append((van, SensorReading(start_us + round(ts_s * US_PER_S), round(temp, 2),
                                               round(float(rng.uniform(40, 60)), 1))))
            if warm:
                for tn, at in loaded_at.items():
                    if tn in cold and at <= ts_s < out_at.get(tn, math.inf):
                        truth.exceptions.setdefault(tn, set()).add("Exception_COLD_CHAIN")

    # promises: generous, except for the late ones
    for tn in parcels_tn:
        rider = rode.get(tn)
        arrival = truth.arrivals_us.get((rider, stop_of[tn])) if rider else None
        if arrival is None or fault.get(tn) in ("misload", "left_behind"):
            promised[tn] = start_us + round((end_s + 4 * 3600) * US_PER_S)
        elif rng.random() < c.late:
            promised[tn] = arrival - round(float(rng.uniform(*c.late_by_s)) * US_PER_S)
            truth.exceptions.setdefault(tn, set()).add("Exception_LATE")
        else:
            promised[tn] = arrival + round(float(rng.uniform(3600, 3 * 3600)) * US_PER_S)
    for entry in parcels:
        tn = entry["tracking_number"]
        entry["promised_by"] = datetime.fromtimestamp(promised[tn] / US_PER_S, UTC).isoformat()
        if tn in cold:
            entry["temp_min_c"], entry["temp_max_c"] = 2.0, 8.0
    manifest = {
        "stops": stops,
        "vehicles": [{"vehicle_id": van, "epc": van_epcs[v]} for v, van in enumerate(vans)],
        "gates": [],  # the caller knows where the gates are: see gate_entries()
        "parcels": parcels,
        "routes": [{"vehicle_id": van, "hub_stop_id": "HUB-1",
                    "stop_ids": [s[0] for s in routes[van]]} for van in vans],
    }  # fmt: skip
    cargo.sort(key=lambda e: e[1].ts_us)
    sensors.sort(key=lambda e: e[1].ts_us)
    pods.sort(key=lambda e: e[1].ts_us)
    return Day(config, start_us, manifest, gates, fixes, carries, cargo, sensors, pods, truth,
               start_us + round(end_s * US_PER_S), depart_s)  # fmt: skip


def gate_entries(day: Day, urls: dict[str, str]) -> list[dict[str, Any]]:
    """The manifest's ``gates`` for the day's gates at ``urls`` (gate id -> pyserial URL)."""
    return [g.manifest_entry(urls[g.gate_id]) for g in day.gates]


def vehicle_ids(day: Day) -> Sequence[str]:
    return [v["vehicle_id"] for v in day.manifest["vehicles"]]
