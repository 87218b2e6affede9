"""A seeded, deterministic delivery day: vans driving a street grid around a hub.

Everything here is pure NumPy: ``Scenario.positions(t_s)`` gives every van's true
position, speed and heading at scenario time ``t_s`` (seconds since the start), and
``Scenario.observe`` adds GPS noise. The same seed gives the same day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

EARTH_M_PER_DEG = 111_320.0
DEFAULT_HUB = (13.4050, 52.5200)  # lon, lat


@dataclass(frozen=True, slots=True)
class VanPlan:
    """One van's day as a piecewise-linear path: waypoints (metres east/north of the hub)
    and the scenario time at which the van is at each; equal consecutive points are dwells."""

    vehicle_id: str
    x_m: NDArray[np.float64]
    y_m: NDArray[np.float64]
    t_s: NDArray[np.float64]
    stops_m: NDArray[np.float64]  # (k, 2) delivery stop positions


def _manhattan_leg(a: tuple[float, float], b: tuple[float, float], x_first: bool
                   ) -> list[tuple[float, float]]:  # fmt: skip
    corner = (b[0], a[1]) if x_first else (a[0], b[1])
    return [corner, b]


def plan_van(
    rng: np.random.Generator, vehicle_id: str, *, stops: int = 12, block_m: float = 150.0,
    radius_blocks: int = 20, loop_s: float | None = None,
) -> VanPlan:  # fmt: skip
    """Hub -> ``stops`` random street corners -> hub, along the grid, with dwells at stops."""
    corners = rng.integers(-radius_blocks, radius_blocks + 1, size=(stops, 2)) * block_m
    # visit in angular order around the hub: a plausible tour, not a random zig-zag
    order = np.argsort(np.arctan2(corners[:, 1], corners[:, 0]))
    corners = corners[order].astype(np.float64)
    points: list[tuple[float, float]] = [(0.0, 0.0)]
    dwell_after: list[float] = [rng.uniform(60, 240)]  # loading at the hub
    for c in [*map(tuple, corners), (0.0, 0.0)]:
        leg = _manhattan_leg(points[-1], (float(c[0]), float(c[1])), bool(rng.integers(2)))
        for p in leg:
            points.append(p)
            dwell_after.append(0.0)
        dwell_after[-1] = rng.uniform(45, 180)  # at a stop (or back at the hub)
    xs, ys, ts = [points[0][0]], [points[0][1]], [0.0]
    t = 0.0
    speed = rng.uniform(7.0, 12.0)
    for i in range(1, len(points)):
        if dwell_after[i - 1] > 0:  # stand still, then drive on
            t += dwell_after[i - 1]
            xs.append(points[i - 1][0])
            ys.append(points[i - 1][1])
            ts.append(t)
        dist = math.dist(points[i - 1], points[i])
        t += dist / (speed * rng.uniform(0.85, 1.15)) if dist else 0.0
        xs.append(points[i][0])
        ys.append(points[i][1])
        ts.append(t)
    return VanPlan(vehicle_id, np.array(xs), np.array(ys), np.array(ts),
                   corners.astype(np.float64))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    lon_deg: NDArray[np.float64]
    lat_deg: NDArray[np.float64]
    speed_mps: NDArray[np.float64]
    heading_deg: NDArray[np.float64]


class Scenario:
    def __init__(self, vans: int, seed: int, hub: tuple[float, float] = DEFAULT_HUB,
                 id_format: str = "VAN-{:04d}") -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        self.hub = hub
        self.seed = seed
        self.plans = [plan_van(rng, id_format.format(i + 1)) for i in range(vans)]
        # vans leave the hub a few minutes apart
        self.offset_s = rng.uniform(0, 600, size=vans)
        self._noise = np.random.default_rng(seed + 1)

    @property
    def vehicle_ids(self) -> list[str]:
        return [p.vehicle_id for p in self.plans]

    def to_lonlat(self, x_m: NDArray[np.float64], y_m: NDArray[np.float64]
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
        lon0, lat0 = self.hub
        lat = lat0 + y_m / EARTH_M_PER_DEG
        lon = lon0 + x_m / (EARTH_M_PER_DEG * math.cos(math.radians(lat0)))
        return lon, lat

    def positions(self, t_s: float) -> Sample:
        """True position of every van at scenario time ``t_s``; tours repeat."""
        n = len(self.plans)
        x, y, v, h = (np.empty(n) for _ in range(4))
        for i, p in enumerate(self.plans):
            t = (t_s - self.offset_s[i]) % p.t_s[-1] if t_s >= self.offset_s[i] else 0.0
            x[i] = np.interp(t, p.t_s, p.x_m)
            y[i] = np.interp(t, p.t_s, p.y_m)
            k = int(np.clip(np.searchsorted(p.t_s, t, side="right"), 1, len(p.t_s) - 1))
            dx, dy = p.x_m[k] - p.x_m[k - 1], p.y_m[k] - p.y_m[k - 1]
            dt = p.t_s[k] - p.t_s[k - 1]
            dist = math.hypot(dx, dy)
            v[i] = dist / dt if dt > 0 and dist > 0 else 0.0
            h[i] = math.degrees(math.atan2(dx, dy)) % 360.0 if dist > 0 else math.nan
        lon, lat = self.to_lonlat(x, y)
        return Sample(lon, lat, v, h)

    def observe(self, t_s: float, noise_m: float = 4.0) -> Sample:
        """What the vans' receivers report: the true position plus Gaussian noise."""
        s = self.positions(t_s)
        n = len(self.plans)
        dx, dy = self._noise.normal(0.0, noise_m, size=(2, n))
        lon, lat = self.to_lonlat(
            (s.lon_deg - self.hub[0]) * EARTH_M_PER_DEG * math.cos(math.radians(self.hub[1])) + dx,
            (s.lat_deg - self.hub[1]) * EARTH_M_PER_DEG + dy,
        )
        speed = np.maximum(0.0, s.speed_mps + self._noise.normal(0.0, 0.2, size=n))
        return Sample(lon, lat, np.where(s.speed_mps > 0, speed, 0.0), s.heading_deg)
