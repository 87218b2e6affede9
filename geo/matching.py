"""Parcel <-> van binding from gate passes, the vans' recent GPS track and their own tags.

Pure NumPy (and the prepared :class:`geo.fences.FenceSet`); no I/O, event time only.

Where a van was at a time: :class:`TrackBuffer`
    The buffer keeps each vehicle's fixes of the last ``horizon_us`` of its own event time
    (default 15 minutes), and every fix of the latest ``extend`` however old (a backlog
    flushed at once places its own evidence), sorted by (vehicle, time), one fix per
    vehicle and instant.
    :meth:`TrackBuffer.position_at` answers "where was vehicle v at time t" for many
    (v, t) pairs at once:

    - between two fixes at most ``max_gap_us`` apart (default 120 s): linear interpolation
      in degrees (exact enough over a few hundred metres);
    - at or next to one fix only (before the first, after the last, or inside a longer
      gap): that fix's position when it is within ``hold_us`` (default 60 s) of t, a van
      parked at a dock sends few distinct fixes;
    - otherwise NaN (unknown): evidence of nothing.

Binding an outbound pass: :func:`match_passes`
    A parcel's pass at the gate of dock D, first read ``t0`` and last read ``t1``, is
    matched against every vehicle in the buffer at ``t = (t0 + t1) / 2``:

    - *at the dock*: the van's position at t is inside D's entry fence; *near the dock*:
      inside D's exit fence (grown by the fence set's margin) but not the entry fence;
    - *tagged*: the van's own EPC was read by the same gate within ``tag_window_us``
      (default 60 s) of the pass (``tag_seen`` gives, per gate and vehicle, the intervals in
      which its tag was read).

    The candidates are the vans at the dock; if there are none, the vans near it. Among
    several candidates, the tagged ones are kept when there are any. Exactly one candidate
    binds; none is ``NO_VAN``, several ``SEVERAL_VANS``: an exception for the dispatcher,
    never a guess. A van that is tagged but has no position (no fix near t) binds too when
    it is the only tagged van and no van is at or near the dock: the gate saw it.

    Confidence of a binding: 0.6 at the dock, 0.4 near it, 0.5 tag only; +0.3 when tagged
    (and positioned); capped at 0.95 until the parcel is seen in the van's cargo scan,
    which the lifecycle adds as its own evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.fences import FenceSet

S_US: Final = 1_000_000
NO_TIME: Final = np.iinfo(np.int64).min

# outcome codes of a pass
BOUND: Final = 0
NO_VAN: Final = 1
SEVERAL_VANS: Final = 2
OUTCOMES: Final = np.array(["bound", "no_van", "several_vans"])

# evidence bits of a binding
AT_DOCK: Final = 1
NEAR_DOCK: Final = 2
TAGGED: Final = 4

IntpArray = NDArray[np.intp]
Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class TrackBuffer:
    """Recent fixes per vehicle; see the module docstring. Not thread-safe."""

    def __init__(self, *, horizon_us: int = 15 * 60 * S_US, max_gap_us: int = 120 * S_US,
                 hold_us: int = 60 * S_US) -> None:  # fmt: skip
        if horizon_us <= 0 or max_gap_us <= 0 or hold_us < 0:
            raise ValueError("horizon_us and max_gap_us must be > 0, hold_us >= 0")
        self.horizon_us: Final = int(horizon_us)
        self.max_gap_us: Final = int(max_gap_us)
        self.hold_us: Final = int(hold_us)
        self.vehicle_ids: list[str] = []
        self._code: dict[str, int] = {}
        self._v: IntpArray = np.empty(0, np.intp)
        self._t: Int64Array = np.empty(0, np.int64)
        self._lon: Float64Array = np.empty(0)
        self._lat: Float64Array = np.empty(0)

    def __len__(self) -> int:
        return len(self._t)

    def code_of(self, vehicle_ids: Sequence[str]) -> IntpArray:
        """Codes of the vehicles (-1 for one never seen)."""
        return np.array([self._code.get(v, -1) for v in vehicle_ids], dtype=np.intp)

    def extend(self, vehicle: ArrayLike, vehicle_ids: Sequence[str], ts_us: ArrayLike,
               lon_deg: ArrayLike, lat_deg: ArrayLike) -> None:  # fmt: skip
        """Add fixes (``vehicle``: codes into ``vehicle_ids``); NaN positions are dropped."""
        t = np.asarray(ts_us, dtype=np.int64).reshape(-1)
        if len(t) == 0:
            return
        codes = np.empty(len(vehicle_ids), np.intp)
        for k, vid in enumerate(vehicle_ids):  # the batch's few vehicles, not its fixes
            code = self._code.get(vid)
            if code is None:
                code = self._code[vid] = len(self.vehicle_ids)
                self.vehicle_ids.append(vid)
            codes[k] = code
        v = codes[np.asarray(vehicle, dtype=np.intp).reshape(-1)]
        lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
        lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
        ok = np.isfinite(lon) & np.isfinite(lat)
        v = np.concatenate([self._v, v[ok]])
        t = np.concatenate([self._t, t[ok]])
        lon = np.concatenate([self._lon, lon[ok]])
        lat = np.concatenate([self._lat, lat[ok]])
        is_new = np.arange(len(t)) >= len(self._t)
        order = np.lexsort((is_new, t, v))  # stored fixes first among equal times
        v, t, lon, lat, is_new = v[order], t[order], lon[order], lat[order], is_new[order]
        keep = np.ones(len(t), bool)
        keep[1:] = (v[1:] != v[:-1]) | (t[1:] != t[:-1])
        newest = np.full(len(self.vehicle_ids), NO_TIME)
        np.maximum.at(newest, v, t)
        # the horizon trims what earlier batches stored, never this batch's own fixes: a
        # backlog flushed at once (a van back online) places its own proofs and passes
        keep &= (newest[v] - t <= self.horizon_us) | is_new
        self._v, self._t, self._lon, self._lat = v[keep], t[keep], lon[keep], lat[keep]

    def position_at(self, vehicle: ArrayLike, ts_us: ArrayLike
                    ) -> tuple[Float64Array, Float64Array]:  # fmt: skip
        """Position of vehicle code ``vehicle[k]`` at ``ts_us[k]`` (broadcast); NaN if unknown."""
        qv, qt = np.broadcast_arrays(np.asarray(vehicle, dtype=np.intp),
                                     np.asarray(ts_us, dtype=np.int64))  # fmt: skip
        qv, qt = qv.reshape(-1), qt.reshape(-1)
        n_f, n_q = len(self._t), len(qt)
        lon = np.full(n_q, np.nan)
        lat = np.full(n_q, np.nan)
        if n_f == 0 or n_q == 0:
            return lon, lat
        v = np.concatenate([self._v, qv])
        t = np.concatenate([self._t, qt])
        is_q = np.arange(n_f + n_q) >= n_f
        # fixes at the query's time sort before it (prev) and after it (next) alike
        order = np.lexsort((is_q, t, v))
        s_q = is_q[order]
        pos = np.arange(len(order))
        prev = np.maximum.accumulate(np.where(s_q, -1, pos))
        nxt = np.minimum.accumulate(np.where(s_q, len(order), pos)[::-1])[::-1]
        at = np.flatnonzero(s_q)
        q = order[at] - n_f
        p_pos, n_pos = prev[at], nxt[at]
        p = np.where(p_pos >= 0, order[np.maximum(p_pos, 0)], -1)
        n = np.where(n_pos < len(order), order[np.minimum(n_pos, len(order) - 1)], -1)
        p_ok = (p >= 0) & (p < n_f) & (v[np.maximum(p, 0)] == qv[q])
        n_ok = (n >= 0) & (n < n_f) & (v[np.maximum(n, 0)] == qv[q])
        pc, nc = np.maximum(p, 0), np.maximum(n, 0)
        tp, tn, tq = self._t[np.minimum(pc, n_f - 1)], self._t[np.minimum(nc, n_f - 1)], qt[q]
        both = p_ok & n_ok & (tn - tp <= self.max_gap_us)
        span = np.maximum(tn - tp, 1)
        w = np.where(both, (tq - tp) / span, 0.0)
        pl, pa = self._lon[np.minimum(pc, n_f - 1)], self._lat[np.minimum(pc, n_f - 1)]
        nl, na = self._lon[np.minimum(nc, n_f - 1)], self._lat[np.minimum(nc, n_f - 1)]
        hold_p = ~both & p_ok & (tq - tp <= self.hold_us)
        hold_n = ~both & ~hold_p & n_ok & (tn - tq <= self.hold_us)
        lon[q] = np.where(both, pl + w * (nl - pl),
                          np.where(hold_p, pl, np.where(hold_n, nl, np.nan)))
        lat[q] = np.where(both, pa + w * (na - pa),
                          np.where(hold_p, pa, np.where(hold_n, na, np.nan)))
        return lon, lat


@dataclass(frozen=True, slots=True)
class Matches:
    """One row per pass given to :func:`match_passes`, in its order."""

    outcome: NDArray[np.int8]  # BOUND, NO_VAN or SEVERAL_VANS
    vehicle: IntpArray  # code in the TrackBuffer (or tag-only vehicle code), -1 unless BOUND
    confidence: Float64Array  # 0 unless BOUND
    evidence: NDArray[np.int8]  # AT_DOCK | NEAR_DOCK | TAGGED bits of the bound van
    candidates: IntpArray  # vans at the dock, or near it when none is at it

    def __len__(self) -> int:
        return len(self.outcome)


def match_passes(
    track: TrackBuffer,
    fences: FenceSet,
    dock_fence: ArrayLike,
    first_us: ArrayLike,
    last_us: ArrayLike,
    *,
    pass_gate: ArrayLike | None = None,
    tag_gate: ArrayLike = (),
    tag_vehicle: ArrayLike = (),
    tag_from_us: ArrayLike = (),
    tag_to_us: ArrayLike = (),
    tag_window_us: int = 60 * S_US,
) -> Matches:
    """Bind each pass to the van at its dock; see the module docstring.

    ``dock_fence`` is the fence index of the pass's dock stop in ``fences``. The tag
    intervals (``tag_gate`` codes comparable with ``pass_gate``, ``tag_vehicle`` codes of
    ``track``) say when a van's own EPC was read by a gate.
    """
    dock = np.asarray(dock_fence, dtype=np.intp).reshape(-1)
    t0 = np.asarray(first_us, dtype=np.int64).reshape(-1)
    t1 = np.asarray(last_us, dtype=np.int64).reshape(-1)
    n_p, n_v = len(dock), len(track.vehicle_ids)
    if not (len(t0) == len(t1) == n_p):
        raise ValueError("match_passes: columns of different lengths")
    mid = t0 + (t1 - t0) // 2
    if n_v and n_p:
        pv = np.repeat(np.arange(n_p), n_v)
        vv = np.tile(np.arange(n_v), n_p)
        lon, lat = track.position_at(vv, mid[pv])
        ok = (dock[pv] >= 0) & np.isfinite(lon)
        fence = np.maximum(dock[pv], 0)
        at = np.zeros(len(pv), bool)
        near = np.zeros(len(pv), bool)
        at[ok] = fences.contains(lon[ok], lat[ok], fence[ok])
        near[ok] = fences.contains(lon[ok], lat[ok], fence[ok], exit=True) & ~at[ok]
        at_m, near_m = at.reshape(n_p, n_v), near.reshape(n_p, n_v)
        located = np.isfinite(lon).reshape(n_p, n_v)
    else:
        at_m = near_m = located = np.zeros((n_p, n_v), bool)
    tagged = _tagged(n_p, n_v, pass_gate, t0, t1, tag_gate, tag_vehicle, tag_from_us,
                     tag_to_us, tag_window_us)  # fmt: skip
    n_at = at_m.sum(axis=1)
    cand = np.where((n_at > 0)[:, None], at_m, near_m)
    n_cand = cand.sum(axis=1)
    cand_tagged = cand & tagged
    use_tags = cand_tagged.sum(axis=1) > 0
    final = np.where(use_tags[:, None], cand_tagged, cand)
    # a tagged van without a position, alone, when no van is at or near the dock
    tag_only = (n_cand == 0) & ((tagged & ~located).sum(axis=1) == 1) & (tagged.sum(axis=1) == 1)
    final = np.where(tag_only[:, None], tagged, final)
    n_final = final.sum(axis=1)
    bound = n_final == 1
    best = np.argmax(final, axis=1) if n_v else np.zeros(n_p, np.intp)
    vehicle = np.where(bound, best, -1).astype(np.intp)
    row = np.arange(n_p)
    vc = np.maximum(vehicle, 0)
    if n_v:
        ev_at, ev_near, ev_tag = at_m[row, vc], near_m[row, vc], tagged[row, vc]
    else:
        ev_at = ev_near = ev_tag = np.zeros(n_p, bool)
    evidence = (np.where(ev_at, AT_DOCK, 0) | np.where(ev_near, NEAR_DOCK, 0)
                | np.where(ev_tag, TAGGED, 0)).astype(np.int8)  # fmt: skip
    base = np.where(ev_at, 0.6, np.where(ev_near, 0.4, 0.5))
    confidence = np.where(bound, np.minimum(base + np.where(ev_tag & (ev_at | ev_near), 0.3, 0.0),
                                            0.95), 0.0)  # fmt: skip
    outcome = np.where(bound, BOUND, np.where(n_final == 0, NO_VAN, SEVERAL_VANS)).astype(np.int8)
    return Matches(outcome, vehicle, confidence, np.where(bound, evidence, 0).astype(np.int8),
                   np.where(tag_only, 1, n_cand).astype(np.intp))  # fmt: skip


def _tagged(n_p: int, n_v: int, pass_gate: ArrayLike | None, t0: Int64Array, t1: Int64Array,
            tag_gate: ArrayLike, tag_vehicle: ArrayLike, tag_from_us: ArrayLike,
            tag_to_us: ArrayLike, window_us: int) -> BoolArray:  # fmt: skip
    """(pass, vehicle): was the vehicle's tag read by the pass's gate near the pass?"""
    out = np.zeros((n_p, n_v), bool)
    tg = np.asarray(tag_gate, dtype=np.intp).reshape(-1)
    if pass_gate is None or len(tg) == 0 or n_p == 0:
        return out
    tv = np.asarray(tag_vehicle, dtype=np.intp).reshape(-1)
    ta = np.asarray(tag_from_us, dtype=np.int64).reshape(-1)
    tb = np.asarray(tag_to_us, dtype=np.int64).reshape(-1)
    pg = np.asarray(pass_gate, dtype=np.intp).reshape(-1)
    # P x T: the tag intervals of a dock are few at a time
    hit = ((pg[:, None] == tg[None, :]) & (ta[None, :] <= t1[:, None] + window_us)
           & (tb[None, :] >= t0[:, None] - window_us) & (tv[None, :] >= 0)
           & (tv[None, :] < n_v))  # fmt: skip
    p, k = np.nonzero(hit)
    out[p, tv[k]] = True
    return out
