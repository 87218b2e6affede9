"""ETAs for every remaining route stop of every van at once, with a learned window.

:class:`EtaEstimator` follows the vans of a :class:`RoutePlan` through their fixes,
arrivals and departures, and answers :meth:`EtaEstimator.estimate` with one row per
remaining stop. It runs on event time only (the devices' ``ts_us``, or a ``now_us`` the
caller passes); the wall clock is never consulted, so a replay gives the ETAs of the
live run. Not thread-safe: one loop owns an estimator.

The rules (the definition; the tests hold a plain scalar loop written from this text)
    *Learned values.* An EWMA starts at its first sample and then moves ``x += a * (s - x)``.
    A learned value blends with its prior by its sample count ``n``: ``w = min(n /
    prior_samples, 1)``, value ``= w * learned + (1 - w) * prior`` (the prior while n = 0).

    - **Fixes** (:meth:`~EtaEstimator.observe_fixes`) are taken per van in time order. A
      fix is ignored entirely when its van is not in the plan, a coordinate is not finite
      or out of range, or it is not newer than the van's newest fix (within a batch a
      repeated time keeps the first in input order). Each kept fix after the van's first
      adds the haversine distance from the fix before it to the van's *odometer*; the
      newest fix gives the van's time ``t``, position and *last speed* (may be NaN). A fix
      is *moving* when its ``speed_mps`` is finite and ``>= min_moving_mps`` (1); each
      moving fix, in order, updates *recent* (EWMA, ``speed_alpha`` 0.3) and *history*
      (EWMA, ``history_alpha`` 0.02). ``speed = blend(recent_weight * recent + (1 -
      recent_weight) * history, n_moving, speed_prior_mps)``, ``recent_weight`` 0.5.
    - **Arrival** at route stop ``i`` of van ``k`` (unknown van or stop, or a stop already
      visited: ignored): first the predictions recorded for stop ``i`` are scored (below);
      then ``i`` and every earlier stop of the route are marked visited and their
      predictions dropped. If a *leg start* is set and the straight haversine ``d`` from
      it to stop ``i`` is ``>= min_leg_m`` (100 m), ``clip(driven / d, 1, 3)`` (``driven``
      = odometer now - odometer at the leg start) is a *detour* sample (EWMA,
      ``learn_alpha`` 0.2; ``detour = blend(.., n, detour_prior)``). The leg start is
      cleared; the van is *at* stop ``i`` since the arrival time.
    - **Departure** from route stop ``i`` (or, with ``hub=True``, from the van's hub;
      unknown van or stop: ignored): if the van is at stop ``i`` and the time is not
      before that arrival, ``min(departure - arrival, max_service_s)`` in seconds is a
      *service* sample (EWMA, ``learn_alpha``; ``service_s = blend(.., n,
      service_prior_s)``) and the van is at no stop. The leg start becomes the place left
      (stop centre or hub) with the odometer now.
    - **Estimate**, for each van with a fix: ``t_k = max(newest fix time, now_us)``; its
      remaining (not visited) stops ``r_1 .. r_m`` in route order; ``cum_j`` = haversine
      (van position, r_1) + the haversines between consecutive remaining stops up to
      ``r_j``; ``eta_j = t_k + round(1e6 * (cum_j * detour / speed + (j - 1) * service_s))``.
      Horizon ``h = eta - t_k`` falls in bucket 0..4 by the edges 15, 30, 60, 120 min
      (an edge belongs to the bucket above); ``H = max(h, horizon_floor_s)``.
    - **Window** per bucket, from its last ``window_history`` (500) scored errors and
      hits: ``w = min(n / window_prior_samples, 1)`` (30); ``q_lo = w * P10(err) + (1 -
      w) * window_prior[0]``, ``q_hi`` likewise with ``P90`` and ``window_prior[1]``
      (-0.15, +0.25; percentiles interpolate linearly); ``confidence = w * share of
      hits + (1 - w) * confidence_prior`` (0.8). ``earliest = max(t_k, min(eta +
      round(q_lo * H), eta - min_half_width))``, ``latest = max(eta + round(q_hi * H),
      eta + min_half_width)`` (all µs; ``min_half_width_s`` 120), so ``t_k <= earliest
      <= eta <= latest``.
    - **Predictions**: each estimate row is recorded as (eta, H, earliest, latest) for its
      (van, stop, bucket) unless one is recorded already (the first one made in a bucket
      is kept). Scoring at the arrival time ``a`` appends, bucket by bucket in increasing
      order, ``err = (a - eta) / H`` and ``hit = earliest <= a <= latest``.
    - **Naive** (the baseline): the same rows and ``cum_j``; ``eta = t_k + round(1e6 *
      cum_j / max(last speed, 1))`` (NaN speed counts as 1 m/s); earliest = latest = eta,
      confidence 0; nothing is recorded.
    - **Plan reload** (:meth:`~EtaEstimator.set_plan`): a van still in the plan keeps its
      fixes, odometer, speeds, detour, service, leg start, and, for the stops (by id)
      still on its route, their visited state, predictions and whether it is at one. Vans
      left out are forgotten. The window histories are kept.

State: per van a fixed set of numbers; per route stop a visited flag and at most one
prediction per bucket; per bucket two bounded histories. Everything is bounded by the
plan's size.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.fences import haversine_m

S_US: Final = 1_000_000
NO_TIME: Final = int(np.iinfo(np.int64).min)  # time of a van (or an arrival) not yet seen
BUCKET_EDGES_MIN: Final = (15, 30, 60, 120)
N_BUCKETS: Final = len(BUCKET_EDGES_MIN) + 1
_EDGES_US: Final = np.array(BUCKET_EDGES_MIN, np.int64) * 60 * S_US

Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]
IntpArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
StrArray = NDArray[np.str_]
Route = tuple[str, tuple[float, float], Sequence[tuple[str, float, float]]]


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


def _lonlat_ok(lon: float, lat: float) -> bool:
    return math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Every van's ordered stops, flat (CSR): van k's stops are rows offsets[k]:offsets[k+1]."""

    vehicle_ids: StrArray  # (V,)
    offsets: IntpArray  # (V+1,), offsets[0] == 0
    stop_ids: StrArray  # (N,) in route order
    stop_lon_deg: Float64Array  # (N,) stop centre (a polygon's centroid, from the caller)
    stop_lat_deg: Float64Array  # (N,)
    hub_lon_deg: Float64Array  # (V,) the van's hub (start and end of its tour)
    hub_lat_deg: Float64Array  # (V,)

    def __post_init__(self) -> None:
        v, n = len(self.vehicle_ids), len(self.stop_ids)
        off = self.offsets
        if off.shape != (v + 1,) or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0):
            raise ValueError("offsets must be (V+1,), start at 0, not decrease and end at N")
        if self.stop_lon_deg.shape != (n,) or self.stop_lat_deg.shape != (n,):
            raise ValueError("stop_ids, stop_lon_deg and stop_lat_deg must have the same length")
        if self.hub_lon_deg.shape != (v,) or self.hub_lat_deg.shape != (v,):
            raise ValueError("vehicle_ids, hub_lon_deg and hub_lat_deg must have the same length")
        if len(set(self.vehicle_ids.tolist())) != v:
            raise ValueError("vehicle_ids must be unique")

    @staticmethod
    def build(routes: Sequence[Route]) -> RoutePlan:
        """``[(vehicle_id, (hub_lon, hub_lat), [(stop_id, lon, lat), ...]), ...]``.

        ValueError names the route on a malformed tuple, an empty or duplicate id, or a
        coordinate that is not a WGS84 lon, lat.
        """
        vids: list[str] = []
        offsets, sids, lons, lats, hubs = [0], [], [], [], []
        for k, route in enumerate(routes):
            if len(route) != 3:
                raise ValueError(f"routes[{k}]: need (vehicle_id, (hub_lon, hub_lat), stops)")
            vid, hub, stops = route
            if not isinstance(vid, str) or not vid or vid in vids:
                raise ValueError(f"routes[{k}]: vehicle_id {vid!r} is empty, not text or repeated")
            if len(hub) != 2 or not _lonlat_ok(float(hub[0]), float(hub[1])):
                raise ValueError(f"routes[{k}] {vid!r}: hub {hub!r} is not a WGS84 lon, lat")
            seen: set[str] = set()
            for j, stop in enumerate(stops):
                where = f"routes[{k}] {vid!r} stops[{j}]"
                if len(stop) != 3:
                    raise ValueError(f"{where}: need (stop_id, lon, lat)")
                sid, lon, lat = stop[0], float(stop[1]), float(stop[2])
                if not isinstance(sid, str) or not sid or sid in seen:
                    raise ValueError(f"{where}: stop_id {sid!r} is empty, not text or repeated")
                if not _lonlat_ok(lon, lat):
                    raise ValueError(f"{where}: ({lon}, {lat}) is not a WGS84 lon, lat")
                seen.add(sid)
                sids.append(sid)
                lons.append(lon)
                lats.append(lat)
            vids.append(vid)
            hubs.append((float(hub[0]), float(hub[1])))
            offsets.append(len(sids))
        hub_arr = np.array(hubs, np.float64).reshape(len(vids), 2)
        return RoutePlan(
            _readonly(np.array(vids, np.str_).reshape(len(vids))),
            _readonly(np.array(offsets, np.intp)),
            _readonly(np.array(sids, np.str_).reshape(len(sids))),
            _readonly(np.array(lons, np.float64)), _readonly(np.array(lats, np.float64)),
            _readonly(hub_arr[:, 0].copy()), _readonly(hub_arr[:, 1].copy()),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Etas:
    """One row per remaining (not yet visited) route stop, in route order per van."""

    vehicle_id: StrArray
    stop_id: StrArray
    eta_us: Int64Array
    earliest_us: Int64Array
    latest_us: Int64Array
    confidence: Float64Array  # in [0, 1]: the share of past arrivals the window held

    def __len__(self) -> int:
        return len(self.eta_us)


@dataclass(slots=True)
class _Vans:
    """Per-van state, one row per van of the plan (fresh rows: see ``_COLUMNS``)."""

    last_ts: Int64Array
    lon: Float64Array
    lat: Float64Array
    last_speed: Float64Array
    odo_m: Float64Array
    n_moving: Int64Array
    recent_mps: Float64Array
    history_mps: Float64Array
    n_detour: Int64Array
    detour: Float64Array
    n_service: Int64Array
    service_s: Float64Array
    leg_lon: Float64Array  # NaN: no leg start
    leg_lat: Float64Array
    leg_odo_m: Float64Array
    at_stop: IntpArray  # flat stop index, -1: at none
    arrived_us: Int64Array


@dataclass(slots=True)
class _Stops:
    """Per-route-stop state: visited, and at most one prediction per horizon bucket."""

    visited: BoolArray
    has_pred: BoolArray  # (N, N_BUCKETS), as are the pred_ columns
    pred_eta: Int64Array
    pred_h: Int64Array
    pred_lo: Int64Array
    pred_hi: Int64Array


# column -> (dtype, value of a fresh row); unlisted columns are float64 NaN
_COLUMNS: Final[dict[str, tuple[type[Any], Any]]] = {
    "last_ts": (np.int64, NO_TIME), "arrived_us": (np.int64, NO_TIME), "at_stop": (np.intp, -1),
    "odo_m": (np.float64, 0.0), "leg_odo_m": (np.float64, 0.0), "n_moving": (np.int64, 0),
    "n_detour": (np.int64, 0), "n_service": (np.int64, 0), "visited": (np.bool_, False),
    "has_pred": (np.bool_, False), "pred_eta": (np.int64, 0), "pred_h": (np.int64, 0),
    "pred_lo": (np.int64, 0), "pred_hi": (np.int64, 0),
}  # fmt: skip


def _take(cls: type[Any], old: Any, old_index: IntpArray) -> Any:
    """Rows ``old_index`` of ``old`` (``-1``: a fresh row), column by column."""
    out = {}
    keep = old_index >= 0
    for f in fields(cls):
        dtype, fill = _COLUMNS.get(f.name, (np.float64, np.nan))
        width = (N_BUCKETS,) if f.name.startswith(("pred_", "has_pred")) else ()
        a = np.full((len(old_index), *width), fill, dtype)
        if old is not None:
            a[keep] = getattr(old, f.name)[old_index[keep]]
        out[f.name] = a
    return cls(**out)


def _blend(n: NDArray[Any], learned: Float64Array, prior: float, samples: int) -> Float64Array:
    w = np.minimum(n / samples, 1.0)
    out: Float64Array = np.where(n > 0, w * learned + (1 - w) * prior, prior)
    return out


def _runs(key: IntpArray) -> tuple[IntpArray, IntpArray, IntpArray]:
    """Runs of equal values in ``key``: their starts, each row's run, their lengths."""
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    return starts, np.cumsum(first) - 1, np.diff(np.append(starts, len(key)))


def _ewma(x: float, sample: float, alpha: float) -> float:
    return sample if math.isnan(x) else x + alpha * (sample - x)


class EtaEstimator:
    """ETAs of every remaining stop of every van; see the module docstring for the rules."""

    def __init__(self, plan: RoutePlan, *, detour_prior: float = 1.35,
                 speed_prior_mps: float = 8.0, service_prior_s: float = 120.0,
                 prior_samples: int = 5, speed_alpha: float = 0.3, history_alpha: float = 0.02,
                 recent_weight: float = 0.5, learn_alpha: float = 0.2,
                 min_moving_mps: float = 1.0, min_leg_m: float = 100.0,
                 max_service_s: float = 1800.0, window_prior: tuple[float, float] = (-0.15, 0.25),
                 confidence_prior: float = 0.8, window_prior_samples: int = 30,
                 window_history: int = 500, min_half_width_s: float = 120.0,
                 horizon_floor_s: float = 60.0) -> None:  # fmt: skip
        limits = (detour_prior - 1, speed_prior_mps, service_prior_s, min_moving_mps, min_leg_m,
                  max_service_s, min_half_width_s, horizon_floor_s)  # fmt: skip
        if not all(math.isfinite(x) and x >= 0 for x in limits):
            raise ValueError("priors and limits must be finite, detour_prior >= 1, others >= 0")
        if min(speed_prior_mps, min_moving_mps, min_leg_m, max_service_s, horizon_floor_s) <= 0:
            raise ValueError("speed_prior_mps and the limits but min_half_width_s must be > 0")
        if not all(0 < a <= 1 for a in (speed_alpha, history_alpha, learn_alpha)):
            raise ValueError("the EWMA alphas must be in (0, 1]")
        if not (0 <= recent_weight <= 1 and 0 <= confidence_prior <= 1
                and window_prior[0] <= window_prior[1] and all(map(math.isfinite, window_prior))):
            raise ValueError("need recent_weight, confidence_prior in [0, 1], window_prior ordered")
        if min(prior_samples, window_prior_samples, window_history) < 1:
            raise ValueError("prior_samples, window_prior_samples, window_history must be >= 1")
        self.detour_prior, self.speed_prior_mps = float(detour_prior), float(speed_prior_mps)
        self.service_prior_s, self.prior_samples = float(service_prior_s), int(prior_samples)
        self.speed_alpha, self.history_alpha = float(speed_alpha), float(history_alpha)
        self.recent_weight, self.learn_alpha = float(recent_weight), float(learn_alpha)
        self.min_moving_mps, self.min_leg_m = float(min_moving_mps), float(min_leg_m)
        self.max_service_s = float(max_service_s)
        self.window_prior = (float(window_prior[0]), float(window_prior[1]))
        self.confidence_prior = float(confidence_prior)
        self.window_prior_samples = int(window_prior_samples)
        self.min_half_width_us = round(min_half_width_s * S_US)
        self.horizon_floor_us = round(horizon_floor_s * S_US)
        self._err = [deque[float](maxlen=window_history) for _ in range(N_BUCKETS)]
        self._hit = [deque[bool](maxlen=window_history) for _ in range(N_BUCKETS)]
        self._vans: _Vans = _take(_Vans, None, np.empty(0, np.intp))
        self._stops: _Stops = _take(_Stops, None, np.empty(0, np.intp))
        self._van_index: dict[str, int] = {}
        self._stop_index: dict[tuple[str, str], int] = {}
        self.set_plan(plan)

    # ------------------------------------------------------------------ plan

    def set_plan(self, plan: RoutePlan) -> None:
        """Swap in a reloaded plan, keeping what each remaining van has learned."""
        old_van, old_stop = self._van_index, self._stop_index
        vids = plan.vehicle_ids.tolist()
        counts = np.diff(plan.offsets)
        van_of_stop = np.repeat(np.arange(len(vids), dtype=np.intp), counts)
        stop_index = {(vids[k], s): i for i, (k, s) in
                      enumerate(zip(van_of_stop.tolist(), plan.stop_ids.tolist(), strict=True))}
        van_map = np.array([old_van.get(v, -1) for v in vids], np.intp)
        stop_map = np.array([old_stop.get(key, -1) for key in stop_index], np.intp)
        vans: _Vans = _take(_Vans, self._vans, van_map)
        self._stops = _take(_Stops, self._stops, stop_map)
        new_of_old = np.full(len(old_stop) + 1, -1, np.intp)  # [-1] stays -1
        new_of_old[stop_map[stop_map >= 0]] = np.flatnonzero(stop_map >= 0)
        vans.at_stop = new_of_old[vans.at_stop]
        vans.arrived_us[vans.at_stop < 0] = NO_TIME
        self._vans, self._plan, self._van_of_stop = vans, plan, van_of_stop
        self._van_index = {v: k for k, v in enumerate(vids)}
        self._stop_index = stop_index

    # ------------------------------------------------------------------ observations

    def observe_fixes(self, vehicle: ArrayLike, vehicle_ids: Sequence[str], ts_us: ArrayLike,
                      lon_deg: ArrayLike, lat_deg: ArrayLike, speed_mps: ArrayLike) -> None:
        """A batch of fixes; ``vehicle`` holds int codes into ``vehicle_ids``, any order."""
        code = np.asarray(vehicle, np.intp).reshape(-1)
        ts = np.asarray(ts_us, np.int64).reshape(-1)
        lon, lat, spd = (np.asarray(a, np.float64).reshape(-1) for a in (lon_deg, lat_deg,
                                                                         speed_mps))  # fmt: skip
        if not (len(code) == len(ts) == len(lon) == len(lat) == len(spd)):
            raise ValueError("vehicle, ts_us, lon_deg, lat_deg and speed_mps must match in length")
        if len(code) and (code.min() < 0 or code.max() >= len(vehicle_ids)):
            raise ValueError("vehicle codes must index vehicle_ids")
        v = self._vans
        van = np.array([self._van_index.get(x, -1) for x in vehicle_ids], np.intp)[code]
        usable = (van >= 0) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)  # False for NaN
        order = np.lexsort((ts, van))
        order = order[usable[order]]
        van, ts, lon, lat, spd = van[order], ts[order], lon[order], lat[order], spd[order]
        fresh = ts > v.last_ts[van]
        fresh[1:] &= (van[1:] != van[:-1]) | (ts[1:] != ts[:-1])
        van, ts, lon, lat, spd = van[fresh], ts[fresh], lon[fresh], lat[fresh], spd[fresh]
        if len(ts) == 0:
            return
        starts, _, count = _runs(van)
        ends = starts + count - 1
        prev_lon, prev_lat = np.roll(lon, 1), np.roll(lat, 1)
        prev_lon[starts], prev_lat[starts] = v.lon[van[starts]], v.lat[van[starts]]
        step = haversine_m(prev_lon, prev_lat, lon, lat)
        np.add.at(v.odo_m, van, np.where(np.isnan(step), 0.0, step))
        vs = van[ends]
        v.last_ts[vs], v.lon[vs], v.lat[vs] = ts[ends], lon[ends], lat[ends]
        v.last_speed[vs] = spd[ends]

        moving = np.flatnonzero(spd >= self.min_moving_mps)  # NaN: not moving
        if len(moving) == 0:
            return
        mv, mx = van[moving], spd[moving]
        ms, group, count = _runs(mv)
        from_end = (ms + count)[group] - 1 - np.arange(len(mv))
        mvans = mv[ms]
        for name, alpha in (("recent_mps", self.speed_alpha), ("history_mps", self.history_alpha)):
            # the EWMA in closed form: x_m = (1-a)^m x_0 + sum_j a (1-a)^(m-j) s_j
            ewma = getattr(v, name)
            x0 = np.where(np.isnan(ewma[mvans]), mx[ms], ewma[mvans])
            acc = np.bincount(group, alpha * (1 - alpha) ** from_end * mx, len(ms))
            ewma[mvans] = (1 - alpha) ** count * x0 + acc
        v.n_moving[mvans] += count

    def observe_arrival(self, vehicle_id: str, stop_id: str, ts_us: int) -> None:
        """The van entered one of its route stops (see the module docstring)."""
        i = self._stop_index.get((vehicle_id, stop_id))
        v, s = self._vans, self._stops
        if i is None or s.visited[i]:
            return
        k = int(self._van_of_stop[i])
        for b in np.flatnonzero(s.has_pred[i]).tolist():
            self._err[b].append(float((ts_us - int(s.pred_eta[i, b])) / int(s.pred_h[i, b])))
            self._hit[b].append(bool(s.pred_lo[i, b] <= ts_us <= s.pred_hi[i, b]))
        first = int(self._plan.offsets[k])
        s.visited[first:i + 1] = True
        s.has_pred[first:i + 1] = False
        if not math.isnan(v.leg_lon[k]):
            lon, lat = self._plan.stop_lon_deg[i], self._plan.stop_lat_deg[i]
            d = float(haversine_m(v.leg_lon[k], v.leg_lat[k], lon, lat))
            if d >= self.min_leg_m:
                sample = min(max((float(v.odo_m[k]) - float(v.leg_odo_m[k])) / d, 1.0), 3.0)
                v.detour[k] = _ewma(float(v.detour[k]), sample, self.learn_alpha)
                v.n_detour[k] += 1
        v.leg_lon[k] = v.leg_lat[k] = np.nan
        v.at_stop[k], v.arrived_us[k] = i, ts_us

    def observe_departure(self, vehicle_id: str, stop_id: str, ts_us: int, *,
                          hub: bool = False) -> None:  # fmt: skip
        """The van left a route stop, or its hub with ``hub=True`` (``stop_id`` unused)."""
        k = self._van_index.get(vehicle_id)
        if k is None:
            return
        v, plan = self._vans, self._plan
        if hub:
            lon, lat = plan.hub_lon_deg[k], plan.hub_lat_deg[k]
        else:
            i = self._stop_index.get((vehicle_id, stop_id))
            if i is None:
                return
            lon, lat = plan.stop_lon_deg[i], plan.stop_lat_deg[i]
            if v.at_stop[k] == i and ts_us >= v.arrived_us[k]:
                sample = min((ts_us - int(v.arrived_us[k])) / S_US, self.max_service_s)
                v.service_s[k] = _ewma(float(v.service_s[k]), sample, self.learn_alpha)
                v.n_service[k] += 1
                v.at_stop[k], v.arrived_us[k] = -1, NO_TIME
        v.leg_lon[k], v.leg_lat[k], v.leg_odo_m[k] = lon, lat, v.odo_m[k]

    # ------------------------------------------------------------------ answers

    def estimate(self, now_us: int | None = None) -> Etas:
        """ETA and window of every remaining stop of every van with a fix; records them."""
        rows, k, t, cum, before = self._remaining(now_us)
        v, s = self._vans, self._stops
        speed = _blend(v.n_moving, self.recent_weight * v.recent_mps
                       + (1 - self.recent_weight) * v.history_mps,
                       self.speed_prior_mps, self.prior_samples)  # fmt: skip
        detour = _blend(v.n_detour, v.detour, self.detour_prior, self.prior_samples)
        service = _blend(v.n_service, v.service_s, self.service_prior_s, self.prior_samples)
        travel_s = cum * detour[k] / speed[k] + before * service[k]
        eta = t + np.rint(travel_s * S_US).astype(np.int64)
        h = eta - t
        bucket = np.searchsorted(_EDGES_US, h, side="right")
        big_h = np.maximum(h, self.horizon_floor_us)
        q_lo, q_hi, conf = self._window()
        half = self.min_half_width_us
        lo_off = np.rint(q_lo[bucket] * big_h).astype(np.int64)
        hi_off = np.rint(q_hi[bucket] * big_h).astype(np.int64)
        earliest = np.maximum(t, np.minimum(eta + lo_off, eta - half))
        latest = np.maximum(eta + hi_off, eta + half)
        new = ~s.has_pred[rows, bucket]
        r, b = rows[new], bucket[new]
        s.has_pred[r, b] = True
        s.pred_eta[r, b], s.pred_h[r, b] = eta[new], big_h[new]
        s.pred_lo[r, b], s.pred_hi[r, b] = earliest[new], latest[new]
        return Etas(self._plan.vehicle_ids[k], self._plan.stop_ids[rows], eta, earliest,
                    latest, conf[bucket])  # fmt: skip

    def naive(self, now_us: int | None = None) -> Etas:
        """Baseline: remaining straight-line distance / the last fix's speed (>= 1 m/s)."""
        rows, k, t, cum, _ = self._remaining(now_us)
        speed = np.fmax(self._vans.last_speed[k], 1.0)  # fmax: NaN gives 1
        eta = t + np.rint(cum / speed * S_US).astype(np.int64)
        return Etas(self._plan.vehicle_ids[k], self._plan.stop_ids[rows], eta, eta.copy(),
                    eta.copy(), np.zeros(len(eta)))  # fmt: skip

    # ------------------------------------------------------------------ internals

    def _remaining(self, now_us: int | None) -> tuple[IntpArray, IntpArray, Int64Array,
                                                      Float64Array, Int64Array]:  # fmt: skip
        """Remaining rows, their van, van time, cumulative distance, remaining stops before."""
        v, plan = self._vans, self._plan
        known = v.last_ts != NO_TIME
        rows = np.flatnonzero(~self._stops.visited & known[self._van_of_stop])
        k = self._van_of_stop[rows]
        t = v.last_ts[k] if now_us is None else np.maximum(v.last_ts[k], now_us)
        starts, group, _ = _runs(k)
        lon, lat = plan.stop_lon_deg[rows], plan.stop_lat_deg[rows]
        prev_lon, prev_lat = np.roll(lon, 1), np.roll(lat, 1)
        prev_lon[starts], prev_lat[starts] = v.lon[k[starts]], v.lat[k[starts]]
        leg = haversine_m(prev_lon, prev_lat, lon, lat)
        total = np.cumsum(leg)
        cum = total - (total - leg)[starts][group]  # cumsum with a reset at each van
        before = np.arange(len(rows), dtype=np.int64) - starts[group]
        return rows, k, t, cum, before

    def _window(self) -> tuple[Float64Array, Float64Array, Float64Array]:
        """Per bucket: q_lo, q_hi and confidence (a loop over the 5 buckets)."""
        out = np.empty((3, N_BUCKETS))
        lo0, hi0 = self.window_prior
        for b in range(N_BUCKETS):
            n = len(self._err[b])
            w = min(n / self.window_prior_samples, 1.0)
            if n:
                p_lo, p_hi = np.percentile(np.fromiter(self._err[b], np.float64, n), (10, 90))
                share = sum(self._hit[b]) / n
            else:
                p_lo = p_hi = share = 0.0
            out[:, b] = (w * p_lo + (1 - w) * lo0, w * p_hi + (1 - w) * hi0,
                         w * share + (1 - w) * self.confidence_prior)  # fmt: skip
        return out[0], out[1], out[2]
