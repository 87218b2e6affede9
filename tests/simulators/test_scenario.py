import math

import numpy as np

from simulators.scenario import EARTH_M_PER_DEG, Scenario


def _metres(s: Scenario, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = (lon - s.hub[0]) * EARTH_M_PER_DEG * math.cos(math.radians(s.hub[1]))
    y = (lat - s.hub[1]) * EARTH_M_PER_DEG
    return x, y


def test_same_seed_same_day_other_seed_other_day() -> None:
    a, b, c = Scenario(5, seed=3), Scenario(5, seed=3), Scenario(5, seed=4)
    pa, pb, pc = a.positions(1234.5), b.positions(1234.5), c.positions(1234.5)
    assert np.array_equal(pa.lon_deg, pb.lon_deg) and np.array_equal(pa.lat_deg, pb.lat_deg)
    assert not np.array_equal(pa.lon_deg, pc.lon_deg)


def test_vans_drive_on_the_grid_near_the_hub_at_plausible_speeds() -> None:
    s = Scenario(20, seed=1)
    moving = 0
    for t in np.arange(900.0, 4500.0, 60.0):
        p = s.positions(float(t))
        x, y = _metres(s, p.lon_deg, p.lat_deg)
        assert np.all(np.hypot(x, y) < 5_000)  # within the 20-block radius
        # on a street: one coordinate is a multiple of the block size
        on_grid = (np.abs(x / 150 - np.round(x / 150)) < 1e-6) | (
            np.abs(y / 150 - np.round(y / 150)) < 1e-6)
        assert on_grid.all()
        assert np.all((p.speed_mps == 0) | ((p.speed_mps > 5) & (p.speed_mps < 15)))
        moving += int((p.speed_mps > 0).sum())
    assert moving > 0.5 * 20 * 60  # most of the time most vans are driving


def test_heading_points_along_the_motion() -> None:
    s = Scenario(10, seed=2)
    for t in (1000.0, 2000.0, 3000.0):
        p0, p1 = s.positions(t), s.positions(t + 1.0)
        x0, y0 = _metres(s, p0.lon_deg, p0.lat_deg)
        x1, y1 = _metres(s, p1.lon_deg, p1.lat_deg)
        for i in range(10):
            if p0.speed_mps[i] > 0 and math.hypot(x1[i] - x0[i], y1[i] - y0[i]) > 1:
                bearing = math.degrees(math.atan2(x1[i] - x0[i], y1[i] - y0[i])) % 360
                diff = abs((bearing - p0.heading_deg[i] + 180) % 360 - 180)
                assert diff < 1.0 or diff > 89  # same segment, or it turned a corner


def test_observed_positions_are_noisy_but_close() -> None:
    s = Scenario(50, seed=5)
    truth, seen = s.positions(2000.0), s.observe(2000.0, noise_m=4.0)
    xt, yt = _metres(s, truth.lon_deg, truth.lat_deg)
    xs, ys = _metres(s, seen.lon_deg, seen.lat_deg)
    err = np.hypot(xs - xt, ys - yt)
    assert 1.0 < float(np.median(err)) < 10.0
