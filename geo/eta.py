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
    - **Waiting.** A van is *waiting* (still at its hub: in the yard for its turn at a
      dock door, or loading) from when it enters the plan, from a reload that finds it
      at its hub (no fix yet, or its newest fix within ``hub_radius_m``, 500, of the hub),
      and from an arrival at its hub, until a departure from its hub or an arrival at one
      of its route stops; otherwise it is *on tour*.
    - **Arrival** at route stop ``i`` of van ``k`` (unknown van or stop, or a stop already
      visited: ignored): the van is on tour; first the predictions recorded for stop ``i``
      are scored (below); then ``i`` and every earlier stop of the route are marked
      visited and their predictions dropped. If a *leg start* is set and the straight
      haversine ``d`` from it to stop ``i`` is ``>= min_leg_m`` (100 m), ``clip(driven /
      d, 1, 3)`` (``driven`` = odometer now - odometer at the leg start) is a *detour*
      sample (EWMA, ``learn_alpha`` 0.2; ``detour = blend(.., n, detour_prior)``). The leg
      start is cleared; the van is *at* stop ``i`` since the arrival time. With
      ``hub=True`` (``stop_id`` unused; unknown van: ignored) the van is back at its hub:
      waiting, at no stop, its leg start cleared; nothing is scored or learned.
    - **Departure** from route stop ``i`` (or, with ``hub=True``, from the van's hub;
      unknown van or stop: ignored): if the van is at stop ``i`` and the time is not
      before that arrival, ``min(departure - arrival, max_service_s)`` in seconds is a
      *service* sample (EWMA, ``learn_alpha``; ``service_s = blend(.., n,
      service_prior_s)``) and the van is at no stop. The leg start becomes the place left
      (stop centre or hub) with the odometer now. A departure from the hub puts the van
      on tour.
    - **Estimate**, for each van with a fix: ``t_k = max(newest fix time, now_us)``; its
      remaining (not visited) stops ``r_1 .. r_m`` in route order; ``cum_j`` = haversine
      (van position, r_1) + the haversines between consecutive remaining stops up to
      ``r_j``; the *raw horizon* ``h_j = 1e6 * (cum_j * detour / speed + (j - 1) *
      service_s)`` µs, not rounded; ``h`` falls in bucket 0..4 by the edges 15, 30, 60,
      120 min (an edge belongs to the bucket above); ``H = max(h, horizon_floor_s)``. The
      row's *slot* is (its van's state: on tour or waiting, its bucket).
    - **Window** per slot, from its last ``window_history`` (500) scored errors and hits:
      ``w = min(n / window_prior_samples, 1)`` (30), ``Q_p = w * P_p(err) + (1 - w) *
      prior_p`` for ``p`` = 10, 50, 90 (percentiles interpolate linearly) with the priors
      ``(window_prior[0], 0, window_prior[1])`` = (-0.15, 0, +0.25) on tour and
      ``(waiting_prior[0], 0, waiting_prior[1])`` = (-0.15, 0, +3) waiting, and
      ``confidence = w * share of hits + (1 - w) * confidence_prior`` (0.8). A row on tour
      takes ``lo, m, hi`` = ``Q_10, Q_50, Q_90`` of its slot (``m = 0`` with
      ``median_correction=False``). A waiting row takes ``lo = min(Q_10 waiting, Q_10 on
      tour)`` of its bucket (the van may leave at once), ``m = 0`` (its ETA is as if it
      left now) and ``hi = Q_90`` of its slot. ``eta = max(t_k, t_k + round(h + m * H))``,
      ``earliest = max(t_k, min(t_k + round(h + lo * H), eta - min_half_width))``,
      ``latest = max(t_k + round(h + hi * H), eta + min_half_width)`` (all µs;
      ``min_half_width_s`` 120), so ``t_k <= earliest <= eta <= latest``; its confidence
      is its slot's.
    - **Predictions**: each estimate row is recorded as (t_k, h, earliest, latest) for
      its (van, stop, slot) unless one is recorded already (the first one made in a slot
      is kept). Scoring at the arrival time ``a`` appends to each recorded slot's history
      ``err = (a - (t_k + h)) / H`` and ``hit = earliest <= a <= latest``.
    - **Naive** (the baseline): the same rows and ``cum_j``; ``eta = t_k + round(1e6 *
      cum_j / max(last speed, 1))`` (NaN speed counts as 1 m/s); earliest = latest = eta,
      confidence 0; nothing is recorded.
    - **Plan reload** (:meth:`~EtaEstimator.set_plan`): a van still in the plan keeps its
      fixes, odometer, speeds, detour, service, leg start, state (but see Waiting), and,
      for the stops (by id) still on its route, their visited state, predictions and
      whether it is at one. Vans left out are forgotten. The window histories are kept.

State: per van a fixed set of numbers; per route stop a visited flag, where it lies along
the stops its van has left, and at most one prediction per slot; per slot two bounded
histories. Everything is bounded by the plan's size.

How :meth:`~EtaEstimator.estimate` stays fast (about 25 NumPy passes over the rows, no
Python loop over vans or stops): the distances along each van's remaining stops, and the
service time before each stop (``j`` times its van's µs per stop), are kept per stop and
change only on an arrival, a departure or a reload; each van's µs per metre and its
distance to its first remaining stop, in metres and in µs, are kept up to date where they
change (fixes, arrivals, departures), so an estimate does no haversine; which rows it has,
and their ids (the plan's own arrays when every stop is a row), is cached until an
arrival, a reload or a van's first fix; per-van values are repeated onto the rows (a van
without rows 0 times); once ``H = h``, ``t + round(h + q * H)`` is ``t + round((1 + q) *
h)``, one lookup (``np.take`` without bounds checks) and multiply per column, the half
width is two clamps over the columns, and only the rows with ``h`` below
``max(horizon_floor, min_half_width / (1 + min m))`` take the rules as written; the
predictions of a first estimate are kept by reference (its columns are read-only), and
the temporaries share buffers.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.fences import EARTH_RADIUS_M, haversine_m

S_US: Final = 1_000_000
NO_TIME: Final = int(np.iinfo(np.int64).min)  # time of a van (or an arrival) not yet seen
BUCKET_EDGES_MIN: Final = (15, 30, 60, 120)
N_BUCKETS: Final = len(BUCKET_EDGES_MIN) + 1
TOUR: Final = 0  # the states, in slot order: slot = state * N_BUCKETS + bucket
WAITING: Final = 1
N_SLOTS: Final = 2 * N_BUCKETS
_EDGES_US: Final = tuple(float(m * 60 * S_US) for m in BUCKET_EDGES_MIN)
# x + _ROUND, read as int64, is _ROUND_BITS + rint(x) for |x| < 2**51: rounding to whole
# microseconds and the move to int64 in one addition
_ROUND: Final = 1.5 * 2.0**52
_ROUND_BITS: Final = int(np.float64(_ROUND).view(np.int64))
_F_LO, _F_MID, _F_HI, _CONF = range(4)  # the columns of EtaEstimator._window()
SNAPSHOT_VERSION: Final = 1  # of EtaEstimator.snapshot()
# what a snapshot keeps of a van and of a route stop; the other columns follow from these
# and the plan (set_plan derives them)
_VAN_STATE: Final = ("last_ts", "lon", "lat", "last_speed", "odo_m", "n_moving", "recent_mps",
                     "history_mps", "n_detour", "detour", "n_service", "service_s", "leg_lon",
                     "leg_lat", "leg_odo_m", "at_stop", "arrived_us", "waiting")  # fmt: skip
_STOP_STATE: Final = ("visited", "cur_slot", "cur_tb", "cur_h", "cur_lo", "cur_hi")
_ARCH_STATE: Final = ("arch_tb", "arch_h", "arch_lo", "arch_hi")  # kept where arch_has

Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]
IntpArray = NDArray[np.intp]
Int8Array = NDArray[np.int8]
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
    """One row per remaining (not yet visited) route stop, in route order per van.

    ``vehicle_id`` and ``stop_id`` are read-only and may be shared with the plan and with
    other answers; the numeric columns are the caller's.
    """

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
    waiting: BoolArray
    first_left: IntpArray  # flat index of its first remaining stop, -1: none (from the plan)
    n_left: IntpArray  # how many stops it has left
    first_lon_rad: Float64Array  # that stop's lon, lat in radians and cos(lat)
    first_lat_rad: Float64Array
    first_cos_lat: Float64Array
    # what an estimate needs, kept up to date where it is learned (see _learned)
    per_m_us: Float64Array  # µs per metre: 1e6 * detour / speed
    per_stop_us: Float64Array  # µs per stop: 1e6 * service_s
    to_first_m: Float64Array  # haversine from the van to its first remaining stop
    to_first_us: Float64Array  # to_first_m * per_m_us


@dataclass(slots=True)
class _Stops:
    """Per-route-stop state: visited, where it lies along the stops its van has left, and
    its predictions: the newest slot's in ``cur_``, the slots it left in ``arch_``."""

    visited: BoolArray
    left_m: Float64Array  # haversines along the remaining stops from the first to this one
    left_j: Float64Array  # remaining stops before this one on its route
    service_us: Float64Array  # left_j * its van's per_stop_us, kept up to date (_set_service)
    cur_slot: Int8Array  # -1: no prediction; the cur_ columns hold the slot's first one
    cur_tb: Int64Array  # the van's time t_k - _ROUND_BITS (see estimate); its raw horizon h
    cur_h: Float64Array
    cur_lo: Int64Array  # earliest, latest
    cur_hi: Int64Array
    arch_has: BoolArray  # (N, N_SLOTS), as are the arch_ columns
    arch_tb: Int64Array
    arch_h: Float64Array
    arch_lo: Int64Array
    arch_hi: Int64Array


@dataclass(frozen=True, slots=True)
class _Rows:
    """What an estimate's rows are, cached while no arrival, reload or first fix changes it."""

    rows: IntpArray | None  # flat stop index of each row; None: every stop of the plan
    count: IntpArray  # per van of the plan, its number of rows (0: no fix or no stop left)
    last: IntpArray  # per van, the row of its last stop (its largest horizon; any row if none)
    left_m: Float64Array  # per row, as in _Stops
    service_us: Float64Array
    vehicle_id: StrArray
    stop_id: StrArray


# column -> (dtype, value of a fresh row); unlisted columns are float64 NaN
_COLUMNS: Final[dict[str, tuple[type[Any], Any]]] = {
    "last_ts": (np.int64, NO_TIME), "arrived_us": (np.int64, NO_TIME), "at_stop": (np.intp, -1),
    "odo_m": (np.float64, 0.0), "leg_odo_m": (np.float64, 0.0), "n_moving": (np.int64, 0),
    "n_detour": (np.int64, 0), "n_service": (np.int64, 0), "waiting": (np.bool_, True),
    "first_left": (np.intp, -1), "n_left": (np.intp, 0), "visited": (np.bool_, False),
    "left_m": (np.float64, 0.0), "left_j": (np.float64, 0.0), "service_us": (np.float64, 0.0),
    "cur_slot": (np.int8, -1),
    "cur_tb": (np.int64, 0), "cur_h": (np.float64, 0.0), "cur_lo": (np.int64, 0),
    "cur_hi": (np.int64, 0), "arch_has": (np.bool_, False), "arch_tb": (np.int64, 0),
    "arch_h": (np.float64, 0.0), "arch_lo": (np.int64, 0), "arch_hi": (np.int64, 0),
}  # fmt: skip


def _take(cls: type[Any], old: Any, old_index: IntpArray) -> Any:
    """Rows ``old_index`` of ``old`` (``-1``: a fresh row), column by column."""
    out = {}
    keep = old_index >= 0
    for f in fields(cls):
        dtype, fill = _COLUMNS.get(f.name, (np.float64, np.nan))
        width = (N_SLOTS,) if f.name.startswith("arch_") else ()
        # filled, not np.zeros: calloc's pages would fault in one by one, the archive's
        # scattered writes taking them in the refreshes (a VM's fault costs microseconds)
        a = np.full((len(old_index), *width), fill, dtype)
        if old is not None and keep.any():
            a[keep] = getattr(old, f.name)[old_index[keep]]
        out[f.name] = a
    return cls(**out)


def pack_arrays(arrays: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
    """Arrays as JSON: their names, dtypes and shapes, and their bytes, one after the other,
    deflated (fast: level 1) and in base64. A tenth of an ``.npz``'s time at a few vans."""
    data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return {"arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()],
            "data": base64.b64encode(zlib.compress(data, 1)).decode()}


def unpack_arrays(doc: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    """The arrays of :func:`pack_arrays` (copies); ValueError when the document is not one
    (or KeyError, TypeError for what is not even shaped like one)."""
    try:
        raw = zlib.decompress(base64.b64decode(doc["data"], validate=True))
    except zlib.error as exc:
        raise ValueError(f"not deflated data: {exc}") from exc
    out, at = {}, 0
    for name, dtype_str, shape in doc["arrays"]:
        dtype = np.dtype(dtype_str)
        if dtype.hasobject or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"{name}: not a plain array")
        count = math.prod(shape)
        if at + count * dtype.itemsize > len(raw):
            raise ValueError(f"{name}: past the end of the data")
        out[str(name)] = np.frombuffer(raw, dtype, count, at).reshape(shape).copy()
        at += count * dtype.itemsize
    if at != len(raw):
        raise ValueError("data left over")
    return out


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


def _along(lon: Float64Array, lat: Float64Array, starts: IntpArray) -> Float64Array:
    """Cumulative haversine along consecutive points, restarting at 0 at each start (one
    cumsum per run, so no run inherits the rounding of the runs before it)."""
    leg = np.zeros(len(lon))
    if len(lon) > 1:
        leg[1:] = haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:])
    leg[starts] = 0.0
    bounds = [*starts.tolist(), len(lon)]
    for a, b in pairwise(bounds):
        np.cumsum(leg[a:b], out=leg[a:b])
    return leg


class EtaEstimator:
    """ETAs of every remaining stop of every van; see the module docstring for the rules."""

    def __init__(self, plan: RoutePlan, *, detour_prior: float = 1.35,
                 speed_prior_mps: float = 8.0, service_prior_s: float = 120.0,
                 prior_samples: int = 5, speed_alpha: float = 0.3, history_alpha: float = 0.02,
                 recent_weight: float = 0.5, learn_alpha: float = 0.2,
                 min_moving_mps: float = 1.0, min_leg_m: float = 100.0,
                 max_service_s: float = 1800.0, window_prior: tuple[float, float] = (-0.15, 0.25),
                 waiting_prior: tuple[float, float] = (-0.15, 3.0), median_correction: bool = True,
                 confidence_prior: float = 0.8, window_prior_samples: int = 30,
                 window_history: int = 500, min_half_width_s: float = 120.0,
                 horizon_floor_s: float = 60.0, hub_radius_m: float = 500.0) -> None:  # fmt: skip
        limits = (detour_prior - 1, speed_prior_mps, service_prior_s, min_moving_mps, min_leg_m,
                  max_service_s, min_half_width_s, horizon_floor_s, hub_radius_m)  # fmt: skip
        if not all(math.isfinite(x) and x >= 0 for x in limits):
            raise ValueError("priors and limits must be finite, detour_prior >= 1, others >= 0")
        if min(speed_prior_mps, min_moving_mps, min_leg_m, max_service_s, horizon_floor_s) <= 0:
            raise ValueError("speed_prior_mps and the limits but min_half_width_s must be > 0")
        if not all(0 < a <= 1 for a in (speed_alpha, history_alpha, learn_alpha)):
            raise ValueError("the EWMA alphas must be in (0, 1]")
        if not (0 <= recent_weight <= 1 and 0 <= confidence_prior <= 1):
            raise ValueError("recent_weight and confidence_prior must be in [0, 1]")
        for prior in (window_prior, waiting_prior):
            if not (len(prior) == 2 and all(map(math.isfinite, prior)) and prior[0] <= prior[1]):
                raise ValueError("window_prior and waiting_prior must be finite (lo, hi), lo <= hi")
        if min(prior_samples, window_prior_samples, window_history) < 1:
            raise ValueError("prior_samples, window_prior_samples, window_history must be >= 1")
        self.detour_prior, self.speed_prior_mps = float(detour_prior), float(speed_prior_mps)
        self.service_prior_s, self.prior_samples = float(service_prior_s), int(prior_samples)
        self.speed_alpha, self.history_alpha = float(speed_alpha), float(history_alpha)
        self.recent_weight, self.learn_alpha = float(recent_weight), float(learn_alpha)
        self.min_moving_mps, self.min_leg_m = float(min_moving_mps), float(min_leg_m)
        self.max_service_s = float(max_service_s)
        self.window_prior = (float(window_prior[0]), float(window_prior[1]))
        self.waiting_prior = (float(waiting_prior[0]), float(waiting_prior[1]))
        self.median_correction = bool(median_correction)
        self.confidence_prior = float(confidence_prior)
        self.window_prior_samples = int(window_prior_samples)
        self.min_half_width_us = round(min_half_width_s * S_US)
        self.horizon_floor_us = round(horizon_floor_s * S_US)
        self.hub_radius_m = float(hub_radius_m)
        self._err = [deque[float](maxlen=window_history) for _ in range(N_SLOTS)]
        self._hit = [deque[bool](maxlen=window_history) for _ in range(N_SLOTS)]
        self._table: Float64Array | None = None  # the window per slot, see _window
        self._q = np.zeros((N_SLOTS, 3))  # lo, m, hi per slot, with _table
        self._flat_mid, self._clamp_t, self._short_us, self._f_max = True, False, 0.0, 0.0
        self._rows: _Rows | None = None
        self._predicted = False  # False: no stop has a prediction (True: some may have)
        self.changes = 0  # counts what changed the state (a snapshot is new when it moved)
        self._history_doc: dict[str, Any] | None = None  # the histories packed, until a score
        self._window()  # the priors' table; rebuilt when a score changes a history
        self._vans: _Vans = _take(_Vans, None, np.empty(0, np.intp))
        self._stops: _Stops = _take(_Stops, None, np.empty(0, np.intp))
        self._van_index: dict[str, int] = {}
        self._stop_index: dict[tuple[str, str], int] = {}
        self.set_plan(plan)

    # ------------------------------------------------------------------ plan

    def set_plan(self, plan: RoutePlan) -> None:
        """Swap in a reloaded plan, keeping what each remaining van has learned."""
        self._adopt(plan, reload=True)

    def _adopt(self, plan: RoutePlan, *, reload: bool) -> None:
        """Map the state onto ``plan`` by van and (van, stop) ids, and derive the rest; a
        ``reload`` also starts a new tour for each van found at its hub."""
        self.changes += 1
        old_van, old_stop = self._van_index, self._stop_index
        vids = plan.vehicle_ids.tolist()
        counts = np.diff(plan.offsets)
        van_of_stop = np.repeat(np.arange(len(vids), dtype=np.intp), counts)
        keys = zip(van_of_stop.tolist(), plan.stop_ids.tolist(), strict=True)
        stop_index = {(vids[k], s): i for i, (k, s) in enumerate(keys)}
        van_map = np.array([old_van.get(v, -1) for v in vids], np.intp)
        stop_map = np.array([old_stop.get(key, -1) for key in stop_index], np.intp)
        vans: _Vans = _take(_Vans, self._vans, van_map)
        stops: _Stops = _take(_Stops, self._stops, stop_map)
        new_of_old = np.full(len(old_stop) + 1, -1, np.intp)  # [-1] stays -1
        new_of_old[stop_map[stop_map >= 0]] = np.flatnonzero(stop_map >= 0)
        vans.at_stop = new_of_old[vans.at_stop]
        vans.arrived_us[vans.at_stop < 0] = NO_TIME
        if reload:
            away = haversine_m(vans.lon, vans.lat, plan.hub_lon_deg, plan.hub_lat_deg)
            vans.waiting |= ~(away > self.hub_radius_m)  # at its hub (or no fix): a new tour
        self._vans, self._stops, self._plan, self._van_of_stop = vans, stops, plan, van_of_stop
        self._vehicle_of_stop: StrArray = _readonly(plan.vehicle_ids[van_of_stop])
        self._van_index = {v: k for k, v in enumerate(vids)}
        self._stop_index = stop_index
        left = np.flatnonzero(~stops.visited)
        k = van_of_stop[left]
        vans.first_left[:], vans.n_left[:] = -1, 0
        starts, _, n = _runs(k)
        stops.left_m[left] = _along(plan.stop_lon_deg[left], plan.stop_lat_deg[left], starts)
        stops.left_j[left] = np.arange(len(left)) - np.repeat(starts, n)
        vans.first_left[k[starts]], vans.n_left[k[starts]] = left[starts], n
        self._set_first(k[starts])
        self._learned(slice(None))
        np.multiply(vans.per_stop_us[van_of_stop], stops.left_j, out=stops.service_us)
        self._to_first(slice(None))
        self._rows = None

    def _set_first(self, k: IntpArray | int) -> None:
        v = self._vans
        i = v.first_left[k]
        lon, lat = self._plan.stop_lon_deg[i], self._plan.stop_lat_deg[i]
        v.first_lon_rad[k], v.first_lat_rad[k] = np.radians(lon), np.radians(lat)
        v.first_cos_lat[k] = np.cos(v.first_lat_rad[k])

    def _refresh_route(self, k: int) -> None:
        """The distances along van ``k``'s remaining stops, after it visited some."""
        s, v, plan = self._stops, self._vans, self._plan
        lo, hi = int(plan.offsets[k]), int(plan.offsets[k + 1])
        left = lo + np.flatnonzero(~s.visited[lo:hi])
        v.n_left[k], v.first_left[k] = len(left), left[0] if len(left) else -1
        if len(left):
            self._set_first(k)
            self._to_first(k)
        s.left_m[left] = _along(plan.stop_lon_deg[left], plan.stop_lat_deg[left],
                                np.zeros(min(len(left), 1), np.intp))  # fmt: skip
        s.left_j[left] = np.arange(len(left))
        self._set_service(k)
        self._rows = None

    def _set_service(self, k: int) -> None:
        """Van ``k``'s stops' service_us, after its left_j or its per_stop_us changed."""
        s, lo, hi = self._stops, int(self._plan.offsets[k]), int(self._plan.offsets[k + 1])
        np.multiply(self._vans.per_stop_us[k], s.left_j[lo:hi], out=s.service_us[lo:hi])
        r = self._rows
        if r is not None and r.rows is not None:  # its copy of service_us, for van k's rows
            a, b = np.searchsorted(r.rows, (lo, hi)).tolist()
            r.service_us[a:b] = s.service_us[r.rows[a:b]]

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """Everything learned and predicted, as a JSON-able document (the arrays packed by
        :func:`pack_arrays`, the window histories apart: they change with a score only):
        :meth:`restore` on an estimator of any plan gives back the state of the vans and
        stops the two plans share, as :meth:`set_plan` keeps it, and the histories."""
        v, s = self._vans, self._stops
        arrays: dict[str, NDArray[Any]] = {
            "vehicle_id": np.asarray(self._plan.vehicle_ids, np.str_),
            "stop_van": self._van_of_stop, "stop_id": np.asarray(self._plan.stop_ids, np.str_),
        }  # fmt: skip
        for name in _VAN_STATE:
            arrays["van_" + name] = getattr(v, name)
        for name in _STOP_STATE:
            arrays["stop_" + name] = getattr(s, name)
        at = np.flatnonzero(s.arch_has.reshape(-1))  # the archive is sparse: (stop, slot)
        arrays["arch_at"] = at
        for name in _ARCH_STATE:
            arrays[name] = getattr(s, name).reshape(-1)[at]
        if self._history_doc is None:  # the histories change with a score only
            self._history_doc = pack_arrays({
                "err": np.array([x for d in self._err for x in d], np.float64),
                "hit": np.array([x for d in self._hit for x in d], np.bool_),
                "history": np.array([len(d) for d in self._err], np.int64)})  # fmt: skip
        return {"version": SNAPSHOT_VERSION, **pack_arrays(arrays),
                "history": self._history_doc}

    def last_fix_us(self) -> dict[str, int]:
        """Each van of the plan that has a fix: the time of its newest (later ones are news)."""
        has = self._vans.last_ts != NO_TIME
        return dict(zip(self._plan.vehicle_ids[has].tolist(),
                        self._vans.last_ts[has].tolist(), strict=True))  # fmt: skip

    def is_waiting(self, vehicle_id: str) -> bool | None:
        """Is the van waiting at its hub (see the rules)? None: not a van of the plan."""
        k = self._van_index.get(vehicle_id)
        return None if k is None else bool(self._vans.waiting[k])

    def at_stop(self, vehicle_id: str) -> str | None:
        """The route stop the van arrived at and has not left (None: at none, or unknown)."""
        k = self._van_index.get(vehicle_id)
        i = -1 if k is None else int(self._vans.at_stop[k])
        return None if i < 0 else str(self._plan.stop_ids[i])

    def restore(self, snapshot: Mapping[str, Any]) -> int:
        """Take a :meth:`snapshot`'s state onto this estimator's plan (see there); returns
        the vans restored. Raises ``ValueError`` (and changes nothing) when the document
        is not a snapshot this version wrote."""
        if not isinstance(snapshot, Mapping) or snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not an ETA snapshot of version {SNAPSHOT_VERSION}")
        try:
            a = {**unpack_arrays(snapshot), **unpack_arrays(snapshot["history"])}
            vids, stop_van, stop_ids = a["vehicle_id"].tolist(), a["stop_van"], a["stop_id"]
            nv, ns = len(vids), len(stop_ids)
            vans: _Vans = _take(_Vans, None, np.full(nv, -1, np.intp))
            stops: _Stops = _take(_Stops, None, np.full(ns, -1, np.intp))
            for cls_rows, prefix, names, size in ((vans, "van_", _VAN_STATE, nv),
                                                  (stops, "stop_", _STOP_STATE, ns)):
                for name in names:
                    col = getattr(cls_rows, name)
                    got = a[prefix + name]
                    if got.shape != (size, *col.shape[1:]):
                        raise ValueError(f"{prefix}{name}: shape {got.shape}")
                    col[...] = got.astype(col.dtype, casting="same_kind")
            stop_keys = [(vids[k], str(x)) for k, x in zip(stop_van.tolist(), stop_ids.tolist(),
                                                           strict=True)]  # fmt: skip
            history = a["history"].tolist()
            if (len(history) != N_SLOTS or min(history) < 0 or sum(history) != len(a["err"])
                    or len(a["err"]) != len(a["hit"]) or len(stop_van) != ns):
                raise ValueError("window histories or stop columns do not add up")
            if ns and not ((stop_van >= 0) & (stop_van < nv)).all():
                raise ValueError("stop_van out of range")
            if not ((vans.at_stop >= -1) & (vans.at_stop < ns)).all():
                raise ValueError("at_stop out of range")
            if not ((stops.cur_slot >= -1) & (stops.cur_slot < N_SLOTS)).all():
                raise ValueError("cur_slot out of range")
            if len(set(vids)) != nv or len(set(stop_keys)) != ns:
                raise ValueError("vehicle or (vehicle, stop) ids repeat")
            floats = [getattr(vans, n) for n in _VAN_STATE if getattr(vans, n).dtype.kind == "f"]
            if any(np.isinf(c).any() for c in floats) or not np.isfinite(a["err"]).all():
                raise ValueError("infinite values")
            at = a["arch_at"].astype(np.intp, casting="same_kind")
            if len(at) and not (at.min() >= 0 and at.max() < ns * N_SLOTS):
                raise ValueError("arch_at out of range")
            stops.arch_has.reshape(-1)[at] = True
            for name in _ARCH_STATE:
                col = getattr(stops, name).reshape(-1)
                got = a[name]
                if got.shape != at.shape:
                    raise ValueError(f"{name}: shape {got.shape}")
                col[at] = got.astype(col.dtype, casting="same_kind")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"not a readable ETA snapshot: {exc!r}") from exc
        ends = np.cumsum([0, *history]).tolist()
        err, hit = a["err"].tolist(), a["hit"].tolist()
        kept = (self._err, self._hit, self._vans, self._stops, self._van_index,
                self._stop_index)  # fmt: skip
        self._err = [deque(err[ends[b]:ends[b + 1]], maxlen=d.maxlen)
                     for b, d in enumerate(kept[0])]  # fmt: skip
        self._hit = [deque(hit[ends[b]:ends[b + 1]], maxlen=d.maxlen)
                     for b, d in enumerate(kept[1])]  # fmt: skip
        self._vans, self._stops = vans, stops
        self._van_index = {x: k for k, x in enumerate(vids)}
        self._stop_index = {key: i for i, key in enumerate(stop_keys)}
        try:
            self._adopt(self._plan, reload=False)
        except Exception as exc:  # (checked above; whatever is left, nothing changes)
            (self._err, self._hit, self._vans, self._stops, self._van_index,
             self._stop_index) = kept  # fmt: skip
            self._adopt(self._plan, reload=False)
            raise ValueError(f"ETA snapshot not applicable: {exc!r}") from exc
        finally:
            self._table, self._predicted, self._history_doc = None, True, None
            self._window()
        return sum(1 for x in vids if x in self._van_index)

    # ------------------------------------------------------------------ observations

    def observe_fixes(self, vehicle: ArrayLike, vehicle_ids: Sequence[str],
                      ts_us: ArrayLike, lon_deg: ArrayLike, lat_deg: ArrayLike,
                      speed_mps: ArrayLike) -> None:  # fmt: skip
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
        self.changes += 1
        starts, _, count = _runs(van)
        ends = starts + count - 1
        prev_lon, prev_lat = np.roll(lon, 1), np.roll(lat, 1)
        prev_lon[starts], prev_lat[starts] = v.lon[van[starts]], v.lat[van[starts]]
        step = haversine_m(prev_lon, prev_lat, lon, lat)
        np.add.at(v.odo_m, van, np.where(np.isnan(step), 0.0, step))
        vs = van[ends]
        if (v.last_ts[vs] == NO_TIME).any():
            self._rows = None  # a van's first fix: it gets rows
        v.last_ts[vs], v.lon[vs], v.lat[vs] = ts[ends], lon[ends], lat[ends]
        v.last_speed[vs] = spd[ends]
        self._to_first(vs)

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
        self._learned(mvans)

    def observe_arrival(self, vehicle_id: str, stop_id: str, ts_us: int, *,
                        hub: bool = False) -> None:  # fmt: skip
        """The van entered one of its route stops, or its hub with ``hub=True`` (``stop_id``
        unused); see the module docstring."""
        self.changes += 1
        v, s = self._vans, self._stops
        if hub:
            kh = self._van_index.get(vehicle_id)
            if kh is not None:
                v.waiting[kh], v.at_stop[kh], v.arrived_us[kh] = True, -1, NO_TIME
                v.leg_lon[kh] = v.leg_lat[kh] = np.nan
            return
        i = self._stop_index.get((vehicle_id, stop_id))
        if i is None or s.visited[i]:
            return
        k = int(self._van_of_stop[i])
        self._score(i, ts_us)
        first, end = int(self._plan.offsets[k]), i + 1
        s.visited[first:end] = True
        s.cur_slot[first:end] = -1
        s.arch_has[first:end] = False
        self._refresh_route(k)
        if not math.isnan(v.leg_lon[k]):
            lon, lat = self._plan.stop_lon_deg[i], self._plan.stop_lat_deg[i]
            d = float(haversine_m(v.leg_lon[k], v.leg_lat[k], lon, lat))
            if d >= self.min_leg_m:
                sample = min(max((float(v.odo_m[k]) - float(v.leg_odo_m[k])) / d, 1.0), 3.0)
                v.detour[k] = _ewma(float(v.detour[k]), sample, self.learn_alpha)
                v.n_detour[k] += 1
                self._learned(k)
        v.leg_lon[k] = v.leg_lat[k] = np.nan
        v.at_stop[k], v.arrived_us[k], v.waiting[k] = i, ts_us, False

    def observe_departure(self, vehicle_id: str, stop_id: str, ts_us: int, *,
                          hub: bool = False) -> None:  # fmt: skip
        """The van left a route stop, or its hub with ``hub=True`` (``stop_id`` unused)."""
        self.changes += 1
        k = self._van_index.get(vehicle_id)
        if k is None:
            return
        v, plan = self._vans, self._plan
        if hub:
            lon, lat = plan.hub_lon_deg[k], plan.hub_lat_deg[k]
            v.waiting[k] = False
        else:
            i = self._stop_index.get((vehicle_id, stop_id))
            if i is None:
                return
            lon, lat = plan.stop_lon_deg[i], plan.stop_lat_deg[i]
            if v.at_stop[k] == i and ts_us >= v.arrived_us[k]:
                sample = min((ts_us - int(v.arrived_us[k])) / S_US, self.max_service_s)
                v.service_s[k] = _ewma(float(v.service_s[k]), sample, self.learn_alpha)
                v.n_service[k] += 1
                self._learned(k)
                self._set_service(k)
                v.at_stop[k], v.arrived_us[k] = -1, NO_TIME
        v.leg_lon[k], v.leg_lat[k], v.leg_odo_m[k] = lon, lat, v.odo_m[k]

    def waiting(self) -> BoolArray:
        """Per van of the plan (in its order): is it waiting at its hub (see the rules)?"""
        out: BoolArray = self._vans.waiting.copy()
        return out

    # ------------------------------------------------------------------ answers

    def estimate(self, now_us: int | None = None) -> Etas:
        """ETA and window of every remaining stop of every van with a fix; records them."""
        r = self._current_rows()
        n = len(r.left_m)
        if n == 0:
            none = np.empty(0, np.int64)
            return self._answer(r, none, none, none, np.empty(0))
        count, v = r.count, self._vans  # per van (a van without rows repeats 0 times)
        t = v.last_ts if now_us is None else np.maximum(v.last_ts, now_us)
        waiting = v.waiting
        # the raw horizon h, per row: left_m * per_m + left_j * per_stop + to_first * per_m
        # (the last two kept where they change: service_us per stop, to_first_us per van)
        h = np.repeat(v.per_m_us, count)
        h *= r.left_m
        h += r.service_us
        spare = np.repeat(v.to_first_us, count)  # its buffer then holds index, then bound
        h += spare
        # slot = state * N_BUCKETS + bucket, the bucket being the number of edges not above h
        slot = (h >= _EDGES_US[0]).view(np.int8)
        above = np.empty(n, np.bool_)  # a buffer for the comparisons
        for edge in _EDGES_US[1:]:
            slot += np.greater_equal(h, edge, out=above).view(np.int8)
        if waiting.all():
            slot += N_BUCKETS
        elif waiting.any():
            slot += np.repeat(waiting.view(np.int8) * np.int8(N_BUCKETS), count)
        index = spare.view(np.intp)[:n]  # [:n]: where intp is narrower than float64
        np.copyto(index, slot)
        table = self._window()
        # once H = h, t + round(h + q * H) = t + round((1 + q) * h); x + _ROUND read as
        # int64 is _ROUND_BITS + rint(x), so t_row holds t - _ROUND_BITS
        t_row = np.repeat(t - _ROUND_BITS, count)
        eta = self._column(None if self._flat_mid else table[_F_MID], index, h, t_row)
        earliest = self._column(table[_F_LO], index, h, t_row)
        latest = self._column(table[_F_HI], index, h, t_row)
        confidence = np.take(table[_CONF], index, mode="clip")
        half = self.min_half_width_us
        if float(h[r.last].max()) * self._f_max >= 2.0**50:  # absurd horizons: no _ROUND trick
            short = np.arange(n)
        else:  # h < horizon_floor, or eta - half before t: the rules as written (_exact)
            short = np.flatnonzero(np.less(h, self._short_us, out=above))
            if half:
                bound = spare.view(np.int64)  # done with index (_exact takes slot)
                np.subtract(eta, half, out=bound)
                np.minimum(earliest, bound, out=earliest)
                np.add(eta, half, out=bound)
                np.maximum(latest, bound, out=latest)
        if self._clamp_t:  # a quantile below -1: earliest or eta could fall before t
            t_us = t_row + _ROUND_BITS
            np.maximum(eta, t_us, out=eta)
            np.maximum(earliest, t_us, out=earliest)
        if len(short):
            self._exact(short, h, slot, t_row, eta, earliest, latest)
        self._record(r, slot, t_row, h, earliest, latest)
        return self._answer(r, eta, earliest, latest, confidence)

    @staticmethod
    def _column(factor: Float64Array | None, index: IntpArray, h: Float64Array,
                t_row: Int64Array) -> Int64Array:  # fmt: skip
        """t + round(factor[index] * h) per row (factor None: 1), in one new array."""
        if factor is None:
            y = h + _ROUND
        else:
            y = np.take(factor, index, mode="clip")
            y *= h
            y += _ROUND
        out: Int64Array = y.view(np.int64)
        out += t_row
        return out

    def naive(self, now_us: int | None = None) -> Etas:
        """Baseline: remaining straight-line distance / the last fix's speed (>= 1 m/s)."""
        r, v = self._current_rows(), self._vans
        t = v.last_ts if now_us is None else np.maximum(v.last_ts, now_us)
        per_m = S_US / np.fmax(v.last_speed, 1.0)  # fmax: NaN gives 1
        cum = r.left_m + np.repeat(v.to_first_m, r.count)
        eta = np.repeat(t, r.count) + np.rint(cum * np.repeat(per_m, r.count)).astype(np.int64)
        return self._answer(r, eta, eta.copy(), eta.copy(), np.zeros(len(eta)))

    # ------------------------------------------------------------------ internals

    def _answer(self, r: _Rows, eta: Int64Array, earliest: Int64Array, latest: Int64Array,
                confidence: Float64Array) -> Etas:  # fmt: skip
        for a in (eta, earliest, latest, confidence):
            a.flags.writeable = False  # the estimator may keep them (see _record)
        return Etas(r.vehicle_id, r.stop_id, eta, earliest, latest, confidence)

    def _current_rows(self) -> _Rows:
        """The rows of an estimate: every remaining stop of every van with a fix."""
        if self._rows is not None:
            return self._rows
        v, s, plan = self._vans, self._stops, self._plan
        has = v.last_ts != NO_TIME
        count = v.n_left * has
        ends = np.cumsum(count)
        if len(ends) and int(ends[-1]) == len(s.visited):  # every stop of the plan is a row
            rows = None
            left_m, service = s.left_m, s.service_us
            vid, sid = self._vehicle_of_stop, plan.stop_ids
        else:
            rows = np.flatnonzero(~s.visited & has[self._van_of_stop])
            left_m, service = s.left_m[rows], s.service_us[rows]
            vid = _readonly(self._vehicle_of_stop[rows])
            sid = _readonly(plan.stop_ids[rows])
        ends -= 1
        self._rows = _Rows(rows, count, ends, left_m, service, vid, sid)
        return self._rows

    def _learned(self, k: IntpArray | slice | int) -> None:
        """Vans ``k``'s µs per metre and per stop, after what they learned changed."""
        v, rw, ps = self._vans, self.recent_weight, self.prior_samples
        speed = _blend(v.n_moving[k], rw * v.recent_mps[k] + (1 - rw) * v.history_mps[k],
                       self.speed_prior_mps, ps)  # fmt: skip
        v.per_m_us[k] = S_US * _blend(v.n_detour[k], v.detour[k], self.detour_prior, ps) / speed
        v.per_stop_us[k] = S_US * _blend(v.n_service[k], v.service_s[k], self.service_prior_s,
                                         ps)  # fmt: skip
        v.to_first_us[k] = v.to_first_m[k] * v.per_m_us[k]

    def _to_first(self, k: IntpArray | slice | int) -> None:
        """geo.fences.haversine_m from vans ``k`` to their first remaining stops, after a
        fix or an arrival moved either."""
        v = self._vans
        lon, lat = np.radians(v.lon[k]), np.radians(v.lat[k])
        h = np.sin((v.first_lat_rad[k] - lat) / 2.0) ** 2
        h += np.cos(lat) * v.first_cos_lat[k] * np.sin((v.first_lon_rad[k] - lon) / 2.0) ** 2
        v.to_first_m[k] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
        v.to_first_us[k] = v.to_first_m[k] * v.per_m_us[k]

    def _exact(self, rows: IntpArray, h: Float64Array, slot: Int8Array, t_row: Int64Array,
               eta: Int64Array, earliest: Int64Array, latest: Int64Array) -> None:  # fmt: skip
        """The window's rules, as written, on the rows ``rows``."""
        hn = h[rows]
        big_h = np.maximum(hn, self.horizon_floor_us)
        q = np.take(self._q, slot[rows], axis=0)
        half = self.min_half_width_us
        e = np.maximum(np.rint(hn + q[:, 1] * big_h), 0.0)
        lo = np.maximum(np.minimum(np.rint(hn + q[:, 0] * big_h), e - half), 0.0)
        hi = np.maximum(np.rint(hn + q[:, 2] * big_h), e + half)
        t = t_row[rows] + _ROUND_BITS
        eta[rows] = t + e.astype(np.int64)
        earliest[rows] = t + lo.astype(np.int64)
        latest[rows] = t + hi.astype(np.int64)

    def _record(self, r: _Rows, slot: Int8Array, t_row: Int64Array, h: Float64Array,
                earliest: Int64Array, latest: Int64Array) -> None:  # fmt: skip
        """Keep each row's prediction when its stop entered a new slot (by reference when
        every stop is new: the answer's columns are read-only)."""
        s = self._stops
        if r.rows is None and not self._predicted:  # every stop, none with a prediction
            s.cur_slot, s.cur_tb, s.cur_h, s.cur_lo, s.cur_hi = slot, t_row, h, earliest, latest
            self._predicted = True
            self.changes += 1
            return
        old = s.cur_slot if r.rows is None else s.cur_slot[r.rows]
        changed = slot != old
        if not changed.any():
            return
        at = np.flatnonzero(changed)
        stop = at if r.rows is None else r.rows[at]
        was = old[at]
        prev = stop * N_SLOTS + was
        keep = (was >= 0) & ~s.arch_has.reshape(-1)[np.where(was >= 0, prev, 0)]
        if keep.any():  # the slot it leaves: archived, unless it already has its first
            ks, kp = stop[keep], prev[keep]
            s.arch_has.reshape(-1)[kp] = True
            s.arch_tb.reshape(-1)[kp], s.arch_h.reshape(-1)[kp] = s.cur_tb[ks], s.cur_h[ks]
            s.arch_lo.reshape(-1)[kp], s.arch_hi.reshape(-1)[kp] = s.cur_lo[ks], s.cur_hi[ks]
        for name in ("cur_slot", "cur_tb", "cur_h", "cur_lo", "cur_hi"):
            if not getattr(s, name).flags.writeable:  # an answer's column: copy on write
                setattr(s, name, getattr(s, name).copy())
        s.cur_slot[stop], s.cur_tb[stop], s.cur_h[stop] = slot[at], t_row[at], h[at]
        s.cur_lo[stop], s.cur_hi[stop] = earliest[at], latest[at]
        self._predicted = True
        self.changes += 1

    def _score(self, i: int, a_us: int) -> None:
        """Score stop ``i``'s predictions against its arrival at ``a_us``."""
        s = self._stops
        preds = [(b, int(s.arch_tb[i, b]), float(s.arch_h[i, b]), int(s.arch_lo[i, b]),
                  int(s.arch_hi[i, b]))
                 for b in np.flatnonzero(s.arch_has[i]).tolist()]  # fmt: skip
        b = int(s.cur_slot[i])
        if b >= 0 and not s.arch_has[i, b]:
            preds.append((b, int(s.cur_tb[i]), float(s.cur_h[i]), int(s.cur_lo[i]),
                          int(s.cur_hi[i])))  # fmt: skip
        for b, tb, h, lo, hi in preds:
            big_h = max(h, self.horizon_floor_us)
            self._err[b].append((a_us - (tb + _ROUND_BITS) - h) / big_h)
            self._hit[b].append(lo <= a_us <= hi)
        if preds:
            self._table = self._history_doc = None

    def _window(self) -> Float64Array:
        """Per slot (column): 1 + lo, 1 + m, 1 + hi and the confidence (lo, m, hi per slot,
        row, in ``_q``)."""
        if self._table is not None:
            return self._table
        q: list[list[float]] = []
        for b in range(N_SLOTS):
            lo0, hi0 = self.waiting_prior if b >= N_BUCKETS else self.window_prior
            n = len(self._err[b])
            w = min(n / self.window_prior_samples, 1.0)
            p10 = p50 = p90 = share = 0.0
            if n:
                p10, p50, p90 = np.percentile(np.fromiter(self._err[b], np.float64, n),
                                              (10, 50, 90)).tolist()  # fmt: skip
                share = sum(self._hit[b]) / n
            q.append([w * p10 + (1 - w) * lo0, w * p50 if self.median_correction else 0.0,
                      w * p90 + (1 - w) * hi0,
                      w * share + (1 - w) * self.confidence_prior])  # fmt: skip
        for b in range(N_BUCKETS):  # a waiting van may leave now, and is predicted so
            q[N_BUCKETS + b][0] = min(q[N_BUCKETS + b][0], q[b][0])
            q[N_BUCKETS + b][1] = 0.0
        self._table = np.array([[1 + x[0] for x in q], [1 + x[1] for x in q],
                                [1 + x[2] for x in q], [x[3] for x in q]])  # fmt: skip
        self._q = np.array([x[:3] for x in q])
        self._flat_mid = all(x[1] == 0 for x in q)  # no correction anywhere: eta = t + h
        self._f_max = max(abs(1 + x[i]) for x in q for i in range(3))
        m_min = min(x[1] for x in q)
        self._clamp_t = m_min < -1 or min(x[0] for x in q) < -1
        self._short_us = (max(float(self.horizon_floor_us), self.min_half_width_us / (1 + m_min))
                          if m_min > -1 else math.inf)  # fmt: skip
        return self._table
