"""FenceSet: every vectorized query against a plain scalar loop on seeded points.

The scalar references use shapely's one-geometry API (``Polygon.contains(Point)``,
``LineString.intersection``) and the haversine formula written out with ``math``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, Polygon, shape

from geo.fences import EARTH_RADIUS_M, FenceSet, haversine_m

LON0, LAT0 = 13.4050, 52.5200  # Berlin
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180
MARGIN = 15.0


def at(x_m: float, y_m: float) -> tuple[float, float]:
    """A position x_m east and y_m north of (LON0, LAT0)."""
    return (LON0 + x_m / (M_PER_DEG * math.cos(math.radians(LAT0))), LAT0 + y_m / M_PER_DEG)


def ring(points_m: list[tuple[float, float]]) -> list[list[float]]:
    closed = [*points_m, points_m[0]]
    return [list(at(x, y)) for x, y in closed]


def point(x_m: float, y_m: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": list(at(x_m, y_m))}


def polygon(*rings_m: list[tuple[float, float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring(r) for r in rings_m]}


def box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# A delivery circle, a concave delivery polygon, a polygon with a hole, a hub with a
# dock circle and a dock polygon inside it, and a circle overlapping the hub's edge.
STOPS: list[tuple[str, str, dict[str, Any], float | None]] = [
    ("S-1", "delivery", point(0, 0), 40.0),
    ("S-2", "delivery", polygon([(200, 0), (320, 0), (320, 40), (240, 40), (240, 120),
                                 (200, 120)]), None),
    ("S-3", "delivery", polygon(box(-300, 200, -150, 320), box(-260, 230, -190, 290)), None),
    ("HUB", "hub", polygon(box(-700, -500, -300, -200)), None),
    ("DOCK-1", "dock", point(-600, -300), 25.0),
    ("DOCK-2", "dock", polygon(box(-420, -480, -380, -440)), None),
    ("S-4", "delivery", point(-300, -350), 60.0),
]


def fence_set(margin_m: float = MARGIN) -> FenceSet:
    return FenceSet.from_stops([s[0] for s in STOPS], [s[1] for s in STOPS],
                               [s[2] for s in STOPS], [s[3] for s in STOPS], margin_m=margin_m)


def scatter(n: int, seed: int) -> tuple[np.ndarray[Any, np.dtype[np.float64]],
                                        np.ndarray[Any, np.dtype[np.float64]]]:
    """Seeded points around the fences: half uniform over the area, half near an edge."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-800, 400, n)
    ys = rng.uniform(-600, 400, n)
    near = rng.random(n) < 0.5
    centres = np.array([(0, 0), (260, 60), (-225, 260), (-500, -350), (-600, -300),
                        (-400, -460), (-300, -350)], float)
    pick = centres[rng.integers(0, len(centres), n)]
    xs = np.where(near, pick[:, 0] + rng.normal(0, 60, n), xs)
    ys = np.where(near, pick[:, 1] + rng.normal(0, 60, n), ys)
    lon = LON0 + xs / (M_PER_DEG * math.cos(math.radians(LAT0)))
    lat = LAT0 + ys / M_PER_DEG
    return lon, lat


def haversine_scalar(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return float(2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(h, 1.0))))


def local_m(lon: float, lat: float, lon0: float, lat0: float) -> tuple[float, float]:
    return ((lon - lon0) * M_PER_DEG * math.cos(math.radians(lat0)), (lat - lat0) * M_PER_DEG)


def scalar_inside(lon: float, lat: float, stop: int) -> bool:
    _, _, g, r = STOPS[stop]
    if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
        return False
    if g["type"] == "Point":
        assert r is not None
        c = g["coordinates"]
        return haversine_scalar(lon, lat, c[0], c[1]) <= r
    return bool(shape(g).contains(Point(lon, lat)))


def scalar_distance_m(lon: float, lat: float, stop: int) -> float:
    """Signed metres to the edge: haversine for circles, local projection for polygons."""
    _, _, g, r = STOPS[stop]
    if g["type"] == "Point":
        assert r is not None
        c = g["coordinates"]
        return haversine_scalar(lon, lat, c[0], c[1]) - r
    poly = shape(g)
    x0, y0, x1, y1 = poly.bounds
    ref = ((x0 + x1) / 2, (y0 + y1) / 2)
    metric = Polygon([local_m(x, y, *ref) for x, y in poly.exterior.coords],
                     [[local_m(x, y, *ref) for x, y in rg.coords] for rg in poly.interiors])
    d = float(metric.boundary.distance(Point(local_m(lon, lat, *ref))))
    return -d if poly.contains(Point(lon, lat)) else d


# ------------------------------------------------------------------ membership


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_membership_equals_a_scalar_loop(seed: int) -> None:
    fences = fence_set()
    lon, lat = scatter(4000, seed)
    fix, fence = fences.membership(lon, lat)
    expected = [(k, s) for k in range(len(lon)) for s in range(len(STOPS))
                if scalar_inside(float(lon[k]), float(lat[k]), s)]
    assert list(zip(fix.tolist(), fence.tolist(), strict=True)) == expected
    assert len(expected) > 500  # the points do exercise the fences
    # nested: some fixes are in the hub and one of its docks at once
    pairs = set(expected)
    assert any((k, 3) in pairs and (k, 4) in pairs for k, _ in expected)
    assert any((k, 3) in pairs and (k, 5) in pairs for k, _ in expected)


@pytest.mark.parametrize("seed", [3, 4])
def test_membership_exit_is_the_fence_grown_by_the_margin(seed: int) -> None:
    fences = fence_set()
    lon, lat = scatter(4000, seed)
    fix, fence = fences.membership_exit(lon, lat)
    got = set(zip(fix.tolist(), fence.tolist(), strict=True))
    checked = 0
    for k in range(len(lon)):
        for s in range(len(STOPS)):
            d = scalar_distance_m(float(lon[k]), float(lat[k]), s)
            # polygon buffers approximate the round corners to within 8 cm
            if abs(d - MARGIN) < 0.1:
                continue
            checked += 1
            assert ((k, s) in got) == (d <= MARGIN), (k, s, d)
    assert checked > 0.99 * len(lon) * len(STOPS)
    entry = set(zip(*(a.tolist() for a in fences.membership(lon, lat)), strict=True))
    assert entry <= got  # the entry fence lies inside the exit fence
    assert len(got) > len(entry)


def test_contains_is_the_pairwise_membership_test() -> None:
    fences = fence_set()
    lon, lat = scatter(3000, 5)
    rng = np.random.default_rng(5)
    fence = rng.integers(0, len(fences), len(lon))
    for exit_ in (False, True):
        query = fences.membership_exit if exit_ else fences.membership
        pairs = set(zip(*(a.tolist() for a in query(lon, lat)), strict=True))
        got = fences.contains(lon, lat, fence, exit=exit_)
        assert got.tolist() == [(k, int(f)) in pairs for k, f in enumerate(fence)]


def test_missing_input_gives_no_membership_not_an_exception() -> None:
    fences = fence_set()
    lon0, lat0 = at(0, 0)
    lon = np.array([np.nan, lon0, np.inf, lon0, lon0])
    lat = np.array([lat0, np.nan, lat0, -np.inf, lat0])
    fix, fence = fences.membership(lon, lat)
    assert fix.tolist() == [4] and fence.tolist() == [0]
    assert fences.membership_exit(lon, lat)[0].tolist() == [4]
    assert fences.contains(lon, lat, 0).tolist() == [False, False, False, False, True]
    d = fences.distance_m(lon, lat, 3)
    assert np.isnan(d[:4]).all() and d[4] > 0
    seg, *_ = fences.crossings(lon, lat, lon[::-1], lat[::-1])
    assert set(seg.tolist()) <= {4}
    empty = FenceSet.empty()
    assert len(empty) == 0
    assert [len(a) for a in empty.membership(lon, lat)] == [0, 0]
    assert [len(a) for a in fences.membership(np.empty(0), np.empty(0))] == [0, 0]


def test_inputs_broadcast() -> None:
    fences = fence_set()
    lon = np.array([at(x, 0)[0] for x in (-100, -20, 0, 30, 100)])
    lat = LAT0  # a scalar broadcast against the longitudes
    fix, fence = fences.membership(lon, lat)
    assert fix.tolist() == [1, 2, 3] and fence.tolist() == [0, 0, 0]
    # one fix against every fence
    lon1, lat1 = at(-600, -300)
    assert fences.contains(lon1, lat1, np.arange(len(fences))).tolist() == [
        False, False, False, True, True, False, False]


def test_distance_m_equals_a_scalar_loop() -> None:
    fences = fence_set()
    lon, lat = scatter(2000, 6)
    fence = np.random.default_rng(6).integers(0, len(fences), len(lon))
    got = fences.distance_m(lon, lat, fence)
    want = [scalar_distance_m(float(lon[k]), float(lat[k]), int(f)) for k, f in enumerate(fence)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
    assert ((got < 0) == fences.contains(lon, lat, fence)).all()


# ------------------------------------------------------------------ crossings


def scalar_crossing(lon0: float, lat0: float, lon1: float, lat1: float,
                    stop: int) -> tuple[float, float] | None:
    """First and last fraction of the segment inside the fence, or None."""
    _, _, g, r = STOPS[stop]
    if g["type"] == "Polygon":
        line = LineString([(lon0, lat0), (lon1, lat1)])
        part = line.intersection(shape(g))
        if part.is_empty:
            return None
        fr = [line.project(Point(c), normalized=True) for c in _coords(part)]
        return min(fr), max(fr)
    # circle: bisection on the distance along the segment, in the centre's local metres
    assert r is not None
    c = g["coordinates"]
    ax, ay = local_m(lon0, lat0, c[0], c[1])
    bx, by = local_m(lon1, lat1, c[0], c[1])
    ts = np.linspace(0.0, 1.0, 20001)
    inside = np.hypot(ax + ts * (bx - ax), ay + ts * (by - ay)) <= r
    if not inside.any():
        return None
    return float(ts[inside][0]), float(ts[inside][-1])


def _coords(geom: Any) -> list[tuple[float, float]]:
    if hasattr(geom, "geoms"):
        return [c for g in geom.geoms for c in _coords(g)]
    return list(geom.coords)


def test_crossings_equal_a_scalar_loop() -> None:
    fences = fence_set()
    rng = np.random.default_rng(7)
    lon0, lat0 = scatter(400, 8)
    # segments of up to about 900 m from each start
    lon1 = lon0 + rng.normal(0, 400, len(lon0)) / (M_PER_DEG * math.cos(math.radians(LAT0)))
    lat1 = lat0 + rng.normal(0, 400, len(lat0)) / M_PER_DEG
    seg, fence, first, last = fences.crossings(lon0, lat0, lon1, lat1)
    got = {(int(s), int(f)): (a, b) for s, f, a, b in
           zip(seg, fence, first.tolist(), last.tolist(), strict=True)}
    assert len(got) == len(seg)
    n_cross = 0
    for k in range(len(lon0)):
        for s in range(len(STOPS)):
            want = scalar_crossing(float(lon0[k]), float(lat0[k]), float(lon1[k]),
                                   float(lat1[k]), s)
            if want is None:
                assert (k, s) not in got or got[(k, s)][1] - got[(k, s)][0] < 1e-4, (k, s)
                continue
            n_cross += 1
            assert (k, s) in got, (k, s)
            a, b = got[(k, s)]
            assert 0.0 <= a <= b <= 1.0
            assert abs(a - want[0]) < 1e-4 and abs(b - want[1]) < 1e-4, ((k, s), got[(k, s)], want)
            # an end inside the fence gives the fraction 0 (start) or 1 (end)
            if fences.contains(lon0[k], lat0[k], s)[0]:
                assert a == 0.0
            if fences.contains(lon1[k], lat1[k], s)[0]:
                assert b == 1.0
    assert n_cross > 50


def test_a_segment_through_a_circle_and_a_standing_point() -> None:
    fences = fence_set()
    a, b = at(-100, 0), at(100, 0)
    seg, fence, first, last = fences.crossings(a[0], a[1], b[0], b[1])
    assert seg.tolist() == [0] and fence.tolist() == [0]
    assert first[0] == pytest.approx(0.3, abs=1e-6) and last[0] == pytest.approx(0.7, abs=1e-6)
    # a zero-length segment crosses what holds its point, from 0 to 1
    c = at(-600, -300)
    seg, fence, first, last = fences.crossings(c[0], c[1], c[0], c[1])
    assert fence.tolist() == [3, 4] and first.tolist() == [0, 0] and last.tolist() == [1, 1]


# ------------------------------------------------------------------ building


def test_fence_columns() -> None:
    fences = fence_set()
    assert fences.stop_ids.tolist() == [s[0] for s in STOPS]
    assert fences.kinds.tolist() == [s[1] for s in STOPS]
    assert fences.is_circle.tolist() == [True, False, False, False, True, False, True]
    assert fences.area_m2[0] == pytest.approx(math.pi * 40**2)
    assert fences.area_m2[3] == pytest.approx(400 * 300, rel=1e-3)
    assert fences.area_m2[2] == pytest.approx(150 * 120 - 70 * 60, rel=1e-3)
    assert fences.index_of(["HUB", "nope", "S-1"]).tolist() == [3, -1, 0]
    with pytest.raises(ValueError):
        fences.radius_m[0] = 1.0  # immutable
    # display polygons of circles are close to the circle
    assert fences.geometry[0].area == pytest.approx(
        math.pi * 40**2 / (M_PER_DEG**2 * math.cos(math.radians(LAT0))), rel=0.01)


def test_no_margin_means_exit_is_entry() -> None:
    fences = fence_set(margin_m=0.0)
    lon, lat = scatter(2000, 9)
    a = [x.tolist() for x in fences.membership(lon, lat)]
    b = [x.tolist() for x in fences.membership_exit(lon, lat)]
    assert a == b


@pytest.mark.parametrize(("geofence", "radius", "message"), [
    ({"type": "Point", "coordinates": [13.4, 52.5]}, None, "radius_m"),
    ({"type": "Point", "coordinates": [13.4, 52.5]}, 0.0, "radius_m"),
    ({"type": "Point", "coordinates": [190.0, 52.5]}, 10.0, "WGS84"),
    ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, None, "not Point or Polygon"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, None,
     "not valid"),
])
def test_bad_stops_are_named(geofence: dict[str, Any], radius: float | None,
                             message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        FenceSet.from_stops(["S-1", "S-X"], ["delivery", "delivery"],
                            [point(0, 0), geofence], [40.0, radius])
    assert "stops[1] 'S-X'" in str(info.value)


def test_duplicate_stop_ids_and_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        FenceSet.from_stops(["A", "A"], ["delivery", "hub"], [point(0, 0), point(9, 9)],
                            [5.0, 5.0])
    with pytest.raises(ValueError, match="kind"):
        FenceSet.from_stops(["A"], ["depot"], [point(0, 0)], [5.0])


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64),
       st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_any_coordinates_are_answered(lon: float, lat: float) -> None:
    fences = FENCES
    fix, fence = fences.membership([lon], [lat])
    want = [s for s in range(len(STOPS)) if scalar_inside(lon, lat, s)]
    assert fence.tolist() == want and fix.tolist() == [0] * len(want)


FENCES = fence_set()


def test_haversine_m_broadcasts() -> None:
    d = haversine_m(LON0, LAT0, np.array([LON0, at(1000, 0)[0]]), LAT0)
    assert d[0] == 0.0 and d[1] == pytest.approx(1000.0, rel=1e-4)
