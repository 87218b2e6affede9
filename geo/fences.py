"""Prepared geofences: which fixes are in which stops, for a whole batch at once.

A :class:`FenceSet` is built once from the manifest's stops (:meth:`FenceSet.from_stops`),
is immutable, and is swapped whole when the manifest is reloaded. Every query takes
arrays of WGS84 degrees, broadcasts them, and answers with arrays: spatial searches
return a pair of index arrays ``(fix_index, fence_index)``, one entry per fix inside a
fence, sorted by fix then fence. A fix with a NaN, infinite or out-of-range coordinate
(outside [-180, 180] x [-90, 90]) is inside nothing; it never raises.

Geometry model (the definition the tests check against plain scalar loops)
    - A ``Point`` geofence with ``radius_m`` is a circle on the sphere: a fix is inside
      when its haversine distance to the centre is ``<= radius_m`` (Earth radius
      6,371,008.8 m). No polygon approximation is involved in membership.
    - A ``Polygon`` (or ``MultiPolygon``) geofence is planar in (lon, lat) degrees, as
      GeoJSON draws it: a fix is inside when ``polygon.contains(Point(lon, lat))``
      (shapely semantics: holes are outside, the boundary is outside).
    - Fences may nest or overlap (a dock inside its hub): a fix is in all of them.
    - Geofences that cross the antimeridian (longitude +-180) are not supported.

Exit fences (hysteresis)
    Every fence also has an exit version grown by ``margin_m`` (default 15 m): a circle
    of radius ``radius_m + margin_m``, or the polygon buffered by ``margin_m`` (round
    joins) in a local metric projection and mapped back to degrees.
    :meth:`FenceSet.membership_exit` queries those. The entry fence always lies inside
    its exit fence.

Local metric projection
    Metres near a fence use an equirectangular projection around the fence's reference
    point (a circle's centre, a polygon's bounding-box centre): ``x = R * dlon * cos(lat0)``,
    ``y = R * dlat`` (radians). Its scale error grows about 0.02 % per km north or south
    of the reference point at mid latitudes (under 20 cm across a 1 km fence), well below
    GPS error at city scale. It serves polygon buffering and areas,
    :meth:`FenceSet.distance_m` for polygons, and segment crossings of circles. A straight
    segment between two fixes is straight in degrees and, the projection being affine,
    straight in metres too, so crossing fractions of polygons (computed in degrees) and
    of circles (in metres) describe the same straight path.

One spatial query
    Fixes are turned into shapely points once per batch and run through one
    :class:`shapely.STRtree` query (``predicate="within"``) over one candidate geometry
    per fence: the polygon itself (the predicate is then exact) or, for a circle, a box
    a little larger than the circle, refined by the haversine test on the candidate
    pairs only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry import shape as shape_of

EARTH_RADIUS_M: Final = 6_371_008.8  # mean Earth radius (IUGG)
DEFAULT_MARGIN_M: Final = 15.0
CIRCLE_VERTICES: Final = 64  # of the display polygon of a circle (membership never uses it)
KINDS: Final = frozenset({"delivery", "hub", "dock"})

_M_PER_DEG: Final = EARTH_RADIUS_M * math.pi / 180.0
_BOX_PAD: Final = 1.01  # circle boxes are 1 % larger than the circle's extent ...
_BOX_PAD_DEG: Final = 1e-9  # ... plus a hair, so every point of the circle is inside

Float64Array = NDArray[np.float64]
IntpArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
ObjectArray = NDArray[np.object_]


def haversine_m(lon1_deg: ArrayLike, lat1_deg: ArrayLike,
                lon2_deg: ArrayLike, lat2_deg: ArrayLike) -> Float64Array:
    """Great-circle distance in metres, broadcast; NaN where an input is not finite."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64))
                              for a in (lon1_deg, lat1_deg, lon2_deg, lat2_deg))  # fmt: skip
    with np.errstate(invalid="ignore"):  # infinite input: NaN, quietly
        h = (np.sin((lat2 - lat1) / 2.0) ** 2
             + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2.0) ** 2)  # fmt: skip
        out: Float64Array = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return out


def _flat(*arrays: ArrayLike) -> list[Float64Array]:
    wide = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in arrays))
    return [np.ascontiguousarray(a).reshape(-1) for a in wide]


def _valid(lon: Float64Array, lat: Float64Array) -> BoolArray:
    """Finite WGS84 coordinates; anything else is a missing position."""
    return np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)


def _pairwise(lon_deg: ArrayLike, lat_deg: ArrayLike, fence_index: ArrayLike
              ) -> tuple[Float64Array, Float64Array, IntpArray]:  # fmt: skip
    lon, lat, fence = np.broadcast_arrays(np.asarray(lon_deg, dtype=np.float64),
                                          np.asarray(lat_deg, dtype=np.float64),
                                          np.asarray(fence_index, dtype=np.intp))  # fmt: skip
    return lon.reshape(-1), lat.reshape(-1), fence.reshape(-1)


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True, eq=False)
class FenceSet:
    """Immutable, prepared geofences of a manifest's stops; see the module docstring.

    Fence ``i`` is stop ``stop_ids[i]``. Columns (read-only arrays, one row per fence):
    ``kinds`` (``delivery``, ``hub``, ``dock``), ``is_circle``, ``radius_m`` (NaN for
    polygons), ``ref_lon_deg`` / ``ref_lat_deg`` (circle centre or polygon bounding-box
    centre), ``area_m2``; ``geometry`` and ``exit_geometry`` are shapely polygons in
    degrees (for a circle a 64-vertex polygon, for maps only).
    """

    stop_ids: NDArray[np.str_]
    kinds: NDArray[np.str_]
    is_circle: BoolArray
    radius_m: Float64Array
    ref_lon_deg: Float64Array
    ref_lat_deg: Float64Array
    area_m2: Float64Array
    margin_m: float
    geometry: ObjectArray
    exit_geometry: ObjectArray
    _cos0: Float64Array
    _polygon: ObjectArray  # polygon fences in degrees, None for circles (prepared)
    _exit_polygon: ObjectArray  # the same grown by margin_m (prepared)
    _boundary_m: ObjectArray  # polygon boundaries in the fence's local metres
    _tree: shapely.STRtree
    _exit_tree: shapely.STRtree
    _index: Mapping[str, int]

    # ------------------------------------------------------------------ building

    @classmethod
    def from_stops(
        cls,
        stop_ids: Sequence[str],
        kinds: Sequence[str],
        geofences: Sequence[Mapping[str, Any]],
        radius_m: Sequence[float | None],
        *,
        margin_m: float = DEFAULT_MARGIN_M,
    ) -> FenceSet:
        """Prepare fences from parallel columns of stops.

        ``geofences`` are GeoJSON geometry dicts: ``{"type": "Point", "coordinates":
        [lon, lat]}`` with ``radius_m[i] > 0``, or a ``Polygon`` / ``MultiPolygon``
        (``radius_m[i]`` ignored). ValueError names the stop on a duplicate id, an unknown
        kind, or a geometry that is not usable (the manifest validates these first).
        """
        n = len(stop_ids)
        if not (len(kinds) == len(geofences) == len(radius_m) == n):
            raise ValueError("stop_ids, kinds, geofences and radius_m must have the same length")
        if not (math.isfinite(margin_m) and margin_m >= 0):
            raise ValueError(f"margin_m must be a finite number >= 0, not {margin_m!r}")
        index: dict[str, int] = {}
        is_circle = np.zeros(n, bool)
        center = np.full((n, 2), np.nan)
        radius = np.full(n, np.nan)
        polygon = np.full(n, None, dtype=object)
        for i, (stop_id, kind, g, r) in enumerate(zip(stop_ids, kinds, geofences, radius_m,
                                                      strict=True)):  # fmt: skip
            where = f"stops[{i}] {stop_id!r}"
            if stop_id in index:
                raise ValueError(f"{where}: duplicate stop_id (also stops[{index[stop_id]}])")
            index[stop_id] = i
            if kind not in KINDS:
                raise ValueError(f"{where}: kind {kind!r} is not one of {sorted(KINDS)}")
            gtype = g.get("type")
            if gtype == "Point":
                lon, lat = (float(c) for c in g["coordinates"][:2])
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    raise ValueError(f"{where}: ({lon}, {lat}) is not a WGS84 lon, lat")
                if r is None or not (math.isfinite(r) and r > 0):
                    raise ValueError(f"{where}: a Point geofence needs radius_m > 0, not {r!r}")
                is_circle[i] = True
                center[i] = lon, lat
                radius[i] = float(r)
            elif gtype in ("Polygon", "MultiPolygon"):
                try:
                    shape = shape_of(g)
                except (ValueError, TypeError, IndexError, KeyError) as exc:
                    raise ValueError(f"{where}: not a GeoJSON {gtype}: {exc}") from exc
                if shape.is_empty or not shape.is_valid or shape.area <= 0:
                    raise ValueError(f"{where}: the {gtype} is empty or not valid")
                x0, y0, x1, y1 = shape.bounds
                if not (x0 >= -180 and x1 <= 180 and y0 >= -90 and y1 <= 90):
                    raise ValueError(f"{where}: coordinates are not WGS84 lon, lat")
                polygon[i] = shape
                center[i] = (x0 + x1) / 2.0, (y0 + y1) / 2.0
            else:
                raise ValueError(f"{where}: geofence type {gtype!r} is not Point or Polygon")
        return cls._build(np.array(list(stop_ids), dtype=np.str_).reshape(n),
                          np.array(list(kinds), dtype=np.str_).reshape(n),
                          is_circle, center, radius, polygon, float(margin_m), index)  # fmt: skip

    @classmethod
    def empty(cls, margin_m: float = DEFAULT_MARGIN_M) -> FenceSet:
        return cls.from_stops([], [], [], [], margin_m=margin_m)

    @classmethod
    def _build(cls, stop_ids: NDArray[np.str_], kinds: NDArray[np.str_], is_circle: BoolArray,
               center: Float64Array, radius: Float64Array, polygon: ObjectArray,
               margin_m: float, index: dict[str, int]) -> FenceSet:  # fmt: skip
        n = len(stop_ids)
        lon0, lat0 = center[:, 0].copy(), center[:, 1].copy()
        cos0 = np.cos(np.radians(lat0))
        circ, poly = np.flatnonzero(is_circle), np.flatnonzero(~is_circle)

        # polygons: to local metres, buffer, back to degrees
        poly_m = _to_metres(polygon[poly], lon0[poly], lat0[poly], cos0[poly])
        area = np.full(n, np.nan)
        area[poly] = shapely.area(poly_m)
        area[circ] = math.pi * radius[circ] ** 2
        exit_polygon = np.full(n, None, dtype=object)
        if margin_m > 0:
            grown = shapely.buffer(poly_m, margin_m, quad_segs=8)
            exit_polygon[poly] = _to_degrees(grown, lon0[poly], lat0[poly], cos0[poly])
        else:
            exit_polygon[poly] = polygon[poly]
        boundary_m = np.full(n, None, dtype=object)
        boundary_m[poly] = shapely.boundary(poly_m)
        shapely.prepare(polygon[poly])
        shapely.prepare(exit_polygon[poly])

        # circles: display polygons and candidate boxes
        geometry, exit_geometry = polygon.copy(), exit_polygon.copy()
        geometry[circ] = _circle_polygons(lon0[circ], lat0[circ], cos0[circ], radius[circ])
        exit_geometry[circ] = _circle_polygons(lon0[circ], lat0[circ], cos0[circ],
                                               radius[circ] + margin_m)  # fmt: skip
        candidate, exit_candidate = polygon.copy(), exit_polygon.copy()
        candidate[circ] = _circle_boxes(lon0[circ], lat0[circ], radius[circ])
        exit_candidate[circ] = _circle_boxes(lon0[circ], lat0[circ], radius[circ] + margin_m)

        return cls(
            stop_ids=_readonly(stop_ids), kinds=_readonly(kinds),
            is_circle=_readonly(is_circle), radius_m=_readonly(radius),
            ref_lon_deg=_readonly(lon0), ref_lat_deg=_readonly(lat0),
            area_m2=_readonly(area), margin_m=margin_m,
            geometry=_readonly(geometry), exit_geometry=_readonly(exit_geometry),
            _cos0=_readonly(cos0), _polygon=_readonly(polygon),
            _exit_polygon=_readonly(exit_polygon), _boundary_m=_readonly(boundary_m),
            _tree=shapely.STRtree(candidate), _exit_tree=shapely.STRtree(exit_candidate),
            _index=index,
        )  # fmt: skip

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.stop_ids)

    def index_of(self, stop_ids: Sequence[str]) -> IntpArray:
        """Fence index of each stop id, -1 where the stop is not in this set."""
        return np.array([self._index.get(s, -1) for s in stop_ids], dtype=np.intp)

    # ------------------------------------------------------------------ queries

    def membership(self, lon_deg: ArrayLike, lat_deg: ArrayLike) -> tuple[IntpArray, IntpArray]:
        """Every (fix, fence) pair with the fix inside the fence, in one spatial query.

        Returns ``(fix_index, fence_index)`` into the broadcast, flattened inputs,
        sorted by fix then fence.
        """
        return self._membership(lon_deg, lat_deg, exit=False)

    def membership_exit(self, lon_deg: ArrayLike, lat_deg: ArrayLike
                        ) -> tuple[IntpArray, IntpArray]:  # fmt: skip
        """As :meth:`membership`, against the exit fences (grown by ``margin_m``)."""
        return self._membership(lon_deg, lat_deg, exit=True)

    def contains(self, lon_deg: ArrayLike, lat_deg: ArrayLike, fence_index: ArrayLike,
                 *, exit: bool = False) -> BoolArray:  # fmt: skip
        """Pairwise: is fix ``k`` inside fence ``fence_index[k]`` (broadcast, flattened)?

        The same test as :meth:`membership` (or :meth:`membership_exit` with ``exit``);
        False for NaN input.
        """
        lon, lat, fence = _pairwise(lon_deg, lat_deg, fence_index)
        out = np.zeros(len(lon), bool)
        circle = self.is_circle[fence]
        c = np.flatnonzero(circle)
        if len(c):
            f = fence[c]
            limit = self.radius_m[f] + (self.margin_m if exit else 0.0)
            d = haversine_m(lon[c], lat[c], self.ref_lon_deg[f], self.ref_lat_deg[f])
            out[c] = (d <= limit) & _valid(lon[c], lat[c])
        p = np.flatnonzero(~circle)
        if len(p):
            geoms = (self._exit_polygon if exit else self._polygon)[fence[p]]
            out[p] = shapely.contains_xy(geoms, lon[p], lat[p]) & _valid(lon[p], lat[p])
        return out

    def distance_m(self, lon_deg: ArrayLike, lat_deg: ArrayLike,
                   fence_index: ArrayLike) -> Float64Array:  # fmt: skip
        """Pairwise signed distance in metres from fix ``k`` to the edge of fence
        ``fence_index[k]``: negative inside, positive outside, NaN for NaN input.

        Circles: haversine distance to the centre minus the radius. Polygons: planar
        distance to the boundary in the fence's local metric projection.
        """
        lon, lat, fence = _pairwise(lon_deg, lat_deg, fence_index)
        out = np.full(len(lon), np.nan)
        circle = self.is_circle[fence]
        c = np.flatnonzero(circle)
        f = fence[c]
        d = haversine_m(lon[c], lat[c], self.ref_lon_deg[f], self.ref_lat_deg[f])
        out[c] = np.where(_valid(lon[c], lat[c]), d - self.radius_m[f], np.nan)
        p = np.flatnonzero(~circle & _valid(lon, lat))
        f = fence[p]
        x, y = _project(lon[p], lat[p], self.ref_lon_deg[f], self.ref_lat_deg[f], self._cos0[f])
        dist = np.asarray(shapely.distance(self._boundary_m[f], shapely.points(x, y)),
                          dtype=np.float64)  # fmt: skip
        inside = np.asarray(shapely.contains_xy(self._polygon[f], lon[p], lat[p]), dtype=bool)
        out[p] = np.where(inside, -dist, dist)
        return out

    def crossings(
        self, lon0_deg: ArrayLike, lat0_deg: ArrayLike, lon1_deg: ArrayLike, lat1_deg: ArrayLike,
    ) -> tuple[IntpArray, IntpArray, Float64Array, Float64Array]:
        """Where straight segments (lon0, lat0) -> (lon1, lat1) run through entry fences.

        Returns ``(segment_index, fence_index, first, last)`` for every segment and fence
        that share a point, sorted by segment then fence: ``first`` and ``last`` are the
        fractions in [0, 1] along the segment of its first and last point inside the
        fence. An end inside the fence by :meth:`contains` gives exactly 0 (start) or 1
        (end), and a fence holding both ends is crossed from 0 to 1 without more
        geometry; a segment that only touches gives ``first == last``; a zero-length
        segment crosses exactly the fences that contain its point. Segments with a
        missing end cross nothing. Otherwise, polygons: the segment's intersection with
        the polygon, in degrees; circles: the segment against the circle of ``radius_m``
        in the centre's local metric projection (for an end within centimetres of the
        edge this may disagree with the haversine test; the end's own test wins).
        """
        lon0, lat0, lon1, lat1 = _flat(lon0_deg, lat0_deg, lon1_deg, lat1_deg)
        ok = np.flatnonzero(_valid(lon0, lat0) & _valid(lon1, lat1))
        lon0, lat0, lon1, lat1 = lon0[ok], lat0[ok], lon1[ok], lat1[ok]
        if len(ok) == 0 or len(self) == 0:
            e = np.empty(0, np.intp)
            return e, e.copy(), np.empty(0), np.empty(0)
        still = (lon0 == lon1) & (lat0 == lat1)
        lines = shapely.linestrings(np.stack([np.column_stack([lon0, lat0]),
                                              np.column_stack([lon1, lat1])], axis=1))  # fmt: skip
        lines[still] = shapely.points(lon0[still], lat0[still])  # a point for the tree
        si, fi = (np.asarray(a, dtype=np.intp)
                  for a in self._tree.query(lines, predicate="intersects"))  # fmt: skip
        a_in = self.contains(lon0[si], lat0[si], fi)
        b_in = self.contains(lon1[si], lat1[si], fi)
        hit = np.zeros(len(si), bool)  # the geometry, where an end outside needs it
        lo = np.zeros(len(si))
        hi = np.ones(len(si))
        need = ~(a_in & b_in) & ~still[si]

        c = np.flatnonzero(need & self.is_circle[fi])
        if len(c):
            s, f = si[c], fi[c]
            args = (self.ref_lon_deg[f], self.ref_lat_deg[f], self._cos0[f])
            ax, ay = _project(lon0[s], lat0[s], *args)
            bx, by = _project(lon1[s], lat1[s], *args)
            dx, dy = bx - ax, by - ay
            qa = dx * dx + dy * dy  # > 0: the segment moves
            qb = 2.0 * (ax * dx + ay * dy)
            qc = ax * ax + ay * ay - self.radius_m[f] ** 2
            disc = qb * qb - 4.0 * qa * qc
            root = np.sqrt(np.maximum(disc, 0.0))
            s0 = (-qb - root) / (2.0 * qa)
            s1 = (-qb + root) / (2.0 * qa)
            hit[c] = (disc >= 0) & (s0 <= 1.0) & (s1 >= 0.0)
            lo[c], hi[c] = np.clip(s0, 0.0, 1.0), np.clip(s1, 0.0, 1.0)

        p = np.flatnonzero(need & ~self.is_circle[fi])
        if len(p):
            s = si[p]
            part = shapely.intersection(lines[s], self._polygon[fi[p]])
            xy, owner = shapely.get_coordinates(part, return_index=True)
            s = s[owner]
            dx, dy = lon1[s] - lon0[s], lat1[s] - lat0[s]
            along_x = np.abs(dx) >= np.abs(dy)
            frac = np.clip(np.where(along_x, (xy[:, 0] - lon0[s]) / np.where(along_x, dx, 1.0),
                                    (xy[:, 1] - lat0[s]) / np.where(along_x, 1.0, dy)),
                           0.0, 1.0)  # fmt: skip
            p_lo = np.full(len(p), np.inf)
            p_hi = np.full(len(p), -np.inf)
            np.minimum.at(p_lo, owner, frac)
            np.maximum.at(p_hi, owner, frac)
            hit[p] = np.isfinite(p_lo)
            lo[p], hi[p] = np.where(hit[p], p_lo, 0.0), np.where(hit[p], p_hi, 1.0)

        # an end inside wins; else the geometry; else (an end in, the other end's
        # geometry missed by a hair) the inside end
        first = np.where(a_in, 0.0, np.where(hit, lo, 1.0))
        last = np.where(b_in, 1.0, np.where(hit, hi, 0.0))
        keep = a_in | b_in | hit
        seg, fence = ok[si[keep]], fi[keep]
        first, last = first[keep], np.maximum(last[keep], first[keep])
        order = np.lexsort((fence, seg))
        return seg[order], fence[order], first[order], last[order]

    # ------------------------------------------------------------------ internals

    def _membership(self, lon_deg: ArrayLike, lat_deg: ArrayLike, *, exit: bool
                    ) -> tuple[IntpArray, IntpArray]:  # fmt: skip
        lon, lat = _flat(lon_deg, lat_deg)
        ok = np.flatnonzero(_valid(lon, lat))
        if len(ok) == 0 or len(self) == 0:
            return np.empty(0, np.intp), np.empty(0, np.intp)
        tree = self._exit_tree if exit else self._tree
        pi, fi = (np.asarray(a, dtype=np.intp) for a in
                  tree.query(shapely.points(lon[ok], lat[ok]), predicate="within"))  # fmt: skip
        fix = ok[pi]
        c = np.flatnonzero(self.is_circle[fi])
        if len(c):
            f = fi[c]
            limit = self.radius_m[f] + (self.margin_m if exit else 0.0)
            far = haversine_m(lon[fix[c]], lat[fix[c]],
                              self.ref_lon_deg[f], self.ref_lat_deg[f]) > limit  # fmt: skip
            if far.any():
                keep = np.ones(len(fi), bool)
                keep[c[far]] = False
                fix, fi = fix[keep], fi[keep]
        order = np.lexsort((fi, fix))
        return fix[order], fi[order]


def _project(lon: Float64Array, lat: Float64Array, lon0: Float64Array, lat0: Float64Array,
             cos0: Float64Array) -> tuple[Float64Array, Float64Array]:  # fmt: skip
    """Degrees to metres in the equirectangular projection around (lon0, lat0)."""
    return (lon - lon0) * (_M_PER_DEG * cos0), (lat - lat0) * _M_PER_DEG


def _to_metres(geoms: ObjectArray, lon0: Float64Array, lat0: Float64Array,
               cos0: Float64Array) -> ObjectArray:  # fmt: skip
    """Each geometry into the local projection around its own reference point."""
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    x, y = _project(xy[:, 0], xy[:, 1], lon0[owner], lat0[owner], cos0[owner])
    out: ObjectArray = shapely.set_coordinates(geoms.copy(), np.column_stack([x, y]))
    return out


def _to_degrees(geoms: ObjectArray, lon0: Float64Array, lat0: Float64Array,
                cos0: Float64Array) -> ObjectArray:  # fmt: skip
    """Inverse of :func:`_to_metres`."""
    xy, owner = shapely.get_coordinates(geoms, return_index=True)
    lon = lon0[owner] + xy[:, 0] / (_M_PER_DEG * cos0[owner])
    lat = lat0[owner] + xy[:, 1] / _M_PER_DEG
    out: ObjectArray = shapely.set_coordinates(geoms.copy(), np.column_stack([lon, lat]))
    return out


def _circle_polygons(lon0: Float64Array, lat0: Float64Array, cos0: Float64Array,
                     radius_m: Float64Array) -> ObjectArray:  # fmt: skip
    """Display polygons of circles (64 vertices, local projection)."""
    angle = np.linspace(0.0, 2.0 * np.pi, CIRCLE_VERTICES + 1)
    angle[-1] = 0.0  # closed exactly
    x = radius_m[:, None] * np.cos(angle)[None, :]
    y = radius_m[:, None] * np.sin(angle)[None, :]
    lon = lon0[:, None] + x / (_M_PER_DEG * cos0[:, None])
    lat = lat0[:, None] + y / _M_PER_DEG
    if len(lon0) == 0:
        return np.empty(0, dtype=object)
    out: ObjectArray = shapely.polygons(np.stack([lon, lat], axis=-1))
    return out


def _circle_boxes(lon0: Float64Array, lat0: Float64Array, radius_m: Float64Array
                  ) -> ObjectArray:  # fmt: skip
    """Boxes in degrees that hold the spherical circles, with a little room to spare."""
    ang = radius_m / EARTH_RADIUS_M
    half_lat = np.degrees(ang) * _BOX_PAD + _BOX_PAD_DEG
    ratio = np.sin(np.minimum(ang, np.pi / 2)) / np.cos(np.radians(lat0))
    half_lon = np.where(ratio < 1.0, np.degrees(np.arcsin(np.minimum(ratio, 1.0))), 360.0)
    half_lon = half_lon * _BOX_PAD + _BOX_PAD_DEG
    if len(lon0) == 0:
        return np.empty(0, dtype=object)
    out: ObjectArray = shapely.box(lon0 - half_lon, lat0 - half_lat,
                                   lon0 + half_lon, lat0 + half_lat)  # fmt: skip
    return out
