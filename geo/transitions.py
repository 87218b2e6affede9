"""Geofence enter / exit / dwell per vehicle, with hysteresis, vectorized over a batch.

:class:`TransitionTracker` turns GPS fixes into :class:`Events` (rows of
``geofence_event``). It runs on event time only (the fixes' ``ts_us``); the wall clock is
never consulted, so a replay gives the events of the live run.

The rules (the definition; the tests hold a plain scalar loop written from this text)
    Fixes are taken per vehicle in time order. For each vehicle and fence, with ``m`` =
    ``min_fixes`` (default 2):

    - A fix is *in* a fence when it is inside the entry fence and a *member* when it is
      inside the exit fence (the fence grown by :attr:`FenceSet.margin_m`); every fix
      that is in is a member.
    - **Enter**: while the vehicle is not in the fence, consecutive fixes that are in
      form a run (a fix that is not in ends it). The run confirms the visit when it has
      ``m`` fixes, or spans ``min_dwell_s`` (default 20 s) from its first fix, or holds a
      virtual fix (below). ENTER is stamped with the run's first fix time.
    - **Exit**: while in the fence, ``m`` consecutive fixes that are not members (outside
      the exit fence) end the visit. EXIT is stamped with the last member fix time
      ("last seen inside"); its ``dwell_s`` is EXIT time minus ENTER time. A single
      fix outside, or GPS drift within the margin, ends nothing.
    - **Dwell**: the first member fix of a visit at least ``dwell_s`` (default 60 s)
      after ENTER emits DWELL, once per visit, stamped with that fix's time; its
      ``dwell_s`` is the time since ENTER. A fix that confirms ENTER may emit DWELL too.
    - **Sparse fixes**: consecutive fixes of a vehicle more than ``sparse_gap_s``
      (default 30 s) and at most ``max_gap_s`` (default 300 s) apart are joined by a
      straight segment, driven at constant speed. Where it runs through an entry fence
      it adds *virtual fixes* for that fence only, inside it, at the interpolated times
      of the boundary crossings: one where the segment enters (when its start is not
      in) and one where it leaves (when its end is not in). A virtual fix is in and a
      member, counts as one fix, and confirms its run on its own: with a minute between
      fixes a van can drive through a stop, or stop there briefly, with no fix inside.
      So a van that drives straight through a stop between two fixes yields ENTER and
      EXIT at the interpolated times (EXIT once ``m`` fixes outside follow), and a
      single fix inside between sparse fixes yields a visit from the interpolated entry
      to the interpolated exit. Dense fixes get no virtual fixes: a drive-by with one
      fix inside fires nothing. Gaps longer than ``max_gap_s`` (outages) are not
      interpolated: a straight line says little about such a path.

    Why these choices: two fixes or 20 s inside filter single-fix GPS jumps and
    drive-bys that clip a fence; the exit margin absorbs drift at the edge (5 m noise
    around the boundary for minutes yields one ENTER and no EXIT); event times are fix
    times, so they are right to one fix interval, except at sparse crossings where the
    interpolated time is the better estimate.

Input handling
    - A fix with a NaN, infinite or out-of-range coordinate is dropped: it is evidence
      of nothing (not of being outside).
    - Fixes are sorted by (vehicle, time) within a batch. A fix not newer than the
      newest fix already processed for its vehicle (a late or duplicate fix; within a
      batch, a repeated time keeps the first) is ignored for transitions and counted in
      :attr:`TransitionTracker.ignored_fixes`. Consequently the events do not depend on
      how an in-order stream is cut into batches; reordering across batches cannot be
      undone (events are emitted once and never amended).
    - Events of one ``update`` may carry times earlier than the batch (an ENTER is
      stamped with the first fix of the run that a later fix confirms).

State, all NumPy arrays: per vehicle, its newest fix (time and position); per
(vehicle, fence) pair that is inside or has an unconfirmed run: the visit's ENTER time,
whether DWELL fired, the last member time, the count of trailing outside fixes, or the
run's length and first time. Pairs with nothing pending are dropped, so the state is
bounded by the vehicles times the fences each is at. A vehicle that goes silent while
inside stays inside (there is no clock to time it out). Not thread-safe: one ingest loop
owns a tracker.

Vectorization: each batch makes one exit-fence membership query for all fixes and one
segment query for its sparse gaps; the per-pair rules then run on the member rows
(plus one row carrying each pair's state), sorted by (pair, position), with run and
episode boundaries from ``np.diff``-style comparisons and ``cumsum``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.fences import FenceSet

S_US: Final = 1_000_000
NO_TIME: Final = np.iinfo(np.int64).min  # newest fix of a vehicle that has sent none
KINDS: Final = np.array(["enter", "dwell", "exit"])
ENTER: Final = 0
DWELL: Final = 1
EXIT: Final = 2

SNAPSHOT_VERSION: Final = 1  # of TransitionTracker.snapshot

# pair states carried between batches
_OUT: Final = 0  # nothing pending (only ever in a fresh head row)
_RUN: Final = 1  # outside, with an unconfirmed run of fixes inside
_IN: Final = 2  # inside

Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]
IntpArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Events:
    """Geofence events, one row per ``geofence_event`` row, sorted by
    (ts_us, vehicle_id, stop_id, kind order enter < dwell < exit).

    ``kind`` is ``"enter"``, ``"exit"`` or ``"dwell"``; ``ts_us`` is event time (int64
    epoch µs); ``dwell_s`` is the time inside for exit and dwell, NaN for enter.
    """

    vehicle_id: NDArray[np.str_]
    stop_id: NDArray[np.str_]
    kind: NDArray[np.str_]
    ts_us: Int64Array
    dwell_s: Float64Array

    def __len__(self) -> int:
        return len(self.ts_us)

    @staticmethod
    def concat(parts: Sequence[Events]) -> Events:
        """Join results of several updates, keeping each part's rows in order."""
        if not parts:
            return _EMPTY
        return Events(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in Events.__dataclass_fields__))  # fmt: skip

    @staticmethod
    def empty() -> Events:
        return _EMPTY


_EMPTY: Final = Events(np.empty(0, np.str_), np.empty(0, np.str_), np.empty(0, np.str_),
                       np.empty(0, np.int64), np.empty(0, np.float64))  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Pairs:
    """Carried state per (vehicle, fence), sorted by (vehicle, fence)."""

    vehicle: Int64Array
    fence: Int64Array
    state: NDArray[np.int8]  # _RUN or _IN
    run_len: Int64Array  # _RUN: fixes in the run
    run_start: Int64Array  # _RUN: first fix time of the run
    t_enter: Int64Array  # _IN: ENTER time
    t_last: Int64Array  # last fix in (run) or member (in)
    dwell_done: BoolArray  # _IN: DWELL emitted for this visit
    out_count: Int64Array  # _IN: consecutive fixes outside the exit fence since t_last

    def __len__(self) -> int:
        return len(self.vehicle)

    def take(self, index: BoolArray | IntpArray) -> _Pairs:
        return _Pairs(*(getattr(self, name)[index] for name in _Pairs.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[_Pairs]) -> _Pairs:
        return _Pairs(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in _Pairs.__dataclass_fields__))  # fmt: skip

    @staticmethod
    def empty() -> _Pairs:
        i64 = np.empty(0, np.int64)
        return _Pairs(i64, i64, np.empty(0, np.int8), i64, i64, i64, i64,
                      np.empty(0, bool), i64)  # fmt: skip


class TransitionTracker:
    """Streams GPS fixes into geofence events; see the module docstring for the rules.

    The exit margin is the fence set's (:attr:`FenceSet.margin_m`, prepared with the
    fences). ``min_dwell_s`` must not exceed ``dwell_s``.
    """

    def __init__(
        self,
        fences: FenceSet,
        *,
        min_fixes: int = 2,
        min_dwell_s: float = 20.0,
        dwell_s: float = 60.0,
        sparse_gap_s: float = 30.0,
        max_gap_s: float = 300.0,
    ) -> None:
        if min_fixes < 1:
            raise ValueError("min_fixes must be >= 1")
        if not (0 <= min_dwell_s <= dwell_s and math.isfinite(dwell_s)):
            raise ValueError("need 0 <= min_dwell_s <= dwell_s < inf")
        if not (0 < sparse_gap_s <= max_gap_s):
            raise ValueError("need 0 < sparse_gap_s <= max_gap_s")
        self.min_fixes: Final = int(min_fixes)
        self.min_dwell_us: Final = round(min_dwell_s * S_US)
        self.dwell_us: Final = round(dwell_s * S_US)
        self.sparse_gap_us: Final = round(sparse_gap_s * S_US)
        self.max_gap_us: Final = (round(max_gap_s * S_US) if math.isfinite(max_gap_s)
                                  else int(np.iinfo(np.int64).max))  # fmt: skip
        self.ignored_fixes = 0  # late or duplicate fixes, see the module docstring
        self._fences = fences
        self._vehicle_ids: list[str] = []
        self._vehicle_code: dict[str, int] = {}
        self._last_ts: Int64Array = np.empty(0, np.int64)
        self._last_lon: Float64Array = np.empty(0, np.float64)
        self._last_lat: Float64Array = np.empty(0, np.float64)
        self._pairs = _Pairs.empty()
        self._snapshot: tuple[tuple[NDArray[Any], ...], dict[str, Any]] | None = None

    # ------------------------------------------------------------------ public

    @property
    def fences(self) -> FenceSet:
        return self._fences

    @property
    def state_size(self) -> int:
        """(vehicle, fence) pairs held: inside, or with an unconfirmed run."""
        return len(self._pairs)

    def set_fences(self, fences: FenceSet) -> None:
        """Swap the fence set whole (manifest reload). Pairs whose stop_id is in the new
        set keep their state (and are judged against the new geometry from the next fix
        on); pairs of stops that disappeared are dropped without an event."""
        p = self._pairs
        new_index = fences.index_of(self._fences.stop_ids[p.fence].tolist())
        keep = new_index >= 0
        moved = p.take(keep)
        moved = replace(moved, fence=new_index[keep].astype(np.int64))
        self._pairs = moved.take(np.lexsort((moved.fence, moved.vehicle)))
        self._fences = fences

    def snapshot(self) -> dict[str, Any]:
        """The state between batches (JSON-able), for a restart to go on where this left
        off (:meth:`restore`): each pair that is inside or has an unconfirmed run, by
        vehicle and stop id. A pair's last member time is left out when it is its
        vehicle's newest fix (it is in ``vehicle_latest``): so the snapshot changes when a
        visit does (a run, ENTER, DWELL, a fix outside, EXIT), not with every fix."""
        p = self._pairs
        last = self._last_ts[p.vehicle]
        t_last = np.where(p.t_last == last, NO_TIME, p.t_last)
        columns: tuple[NDArray[Any], ...] = (
            p.vehicle, p.fence, p.state, p.run_len, p.run_start, p.t_enter, t_last,
            p.dwell_done, p.out_count)  # fmt: skip
        cached = self._snapshot
        if cached is not None and all(np.array_equal(a, b)
                                      for a, b in zip(cached[0], columns, strict=True)):
            return cached[1]  # the same object: nothing changed (cheap to tell, per batch)
        ids = self._vehicle_ids
        pairs = [list(row) for row in zip(
            [ids[v] for v in p.vehicle.tolist()], self._fences.stop_ids[p.fence].tolist(),
            p.state.tolist(), p.run_len.tolist(), p.run_start.tolist(), p.t_enter.tolist(),
            [None if t == NO_TIME else t for t in t_last.tolist()], p.dwell_done.tolist(),
            p.out_count.tolist(), strict=True)]  # fmt: skip
        out = {"v": SNAPSHOT_VERSION, "pairs": pairs}
        self._snapshot = (columns, out)
        return out

    def restore(self, snapshot: Mapping[str, Any],
                last: Mapping[str, tuple[int, float, float]]) -> int:  # fmt: skip
        """Go on from :meth:`snapshot` (with the fences set first): ``last`` is each
        vehicle's newest fix (time in µs, lon, lat), as ``vehicle_latest`` has it. Pairs of
        stops no longer fenced, or of vehicles without a newest fix, are left out.
        Returns the pairs restored; ``ValueError`` for a snapshot of another version."""
        if not isinstance(snapshot, Mapping) or snapshot.get("v") != SNAPSHOT_VERSION:
            version = snapshot.get("v") if isinstance(snapshot, Mapping) else snapshot
            raise ValueError(f"geofence snapshot version {version!r}, not {SNAPSHOT_VERSION}")
        # everything checked and built before any of it is kept: a bad snapshot changes
        # nothing
        rows = [r for r in snapshot["pairs"] if r[0] in last]
        cols = list(zip(*rows, strict=True)) if rows else [()] * 9
        if len(cols) != 9 or not set(cols[2]) <= {_RUN, _IN}:
            raise ValueError("geofence snapshot: pairs of 9 fields with a state of run or in")
        fence = self._fences.index_of(list(cols[1])).astype(np.int64)
        t_last = np.array([last[v][0] if t is None else t
                           for v, t in zip(cols[0], cols[6], strict=True)], np.int64)
        ints = [np.array(c, np.int64) for c in (cols[3], cols[4], cols[5], cols[8])]
        dwell_done = np.array(cols[7], bool)
        vehicles = list(last)
        last_ts = np.array([last[v][0] for v in vehicles], np.int64)
        last_lon = np.array([last[v][1] for v in vehicles], np.float64)
        last_lat = np.array([last[v][2] for v in vehicles], np.float64)
        codes = self._intern(vehicles)
        self._last_ts[codes], self._last_lon[codes], self._last_lat[codes] = (
            last_ts, last_lon, last_lat)
        pairs = _Pairs(self._intern(list(cols[0])), fence, np.array(cols[2], np.int8),
                       ints[0], ints[1], ints[2], t_last, dwell_done,
                       ints[3]).take(fence >= 0)  # fmt: skip
        self._pairs = pairs.take(np.lexsort((pairs.fence, pairs.vehicle)))
        self._snapshot = None
        return len(self._pairs)

    def inside(self) -> dict[str, str | None]:
        """The stop each known vehicle is inside now (ENTER without EXIT), or None; when
        it is inside several (a dock in its hub), the smallest by area."""
        out: dict[str, str | None] = dict.fromkeys(self._vehicle_ids)
        p = self._pairs
        inside = np.flatnonzero(p.state == _IN)
        if len(inside) == 0:
            return out
        v, f = p.vehicle[inside], p.fence[inside]
        order = np.lexsort((self._fences.stop_ids[f], self._fences.area_m2[f], v))
        v, f = v[order], f[order]
        first = np.ones(len(v), bool)
        first[1:] = v[1:] != v[:-1]
        for code, stop in zip(v[first].tolist(), self._fences.stop_ids[f[first]].tolist(),
                              strict=True):  # fmt: skip
            out[self._vehicle_ids[code]] = stop
        return out

    def update(
        self,
        vehicle: ArrayLike,
        vehicles: Sequence[str],
        ts_us: ArrayLike,
        lon_deg: ArrayLike,
        lat_deg: ArrayLike,
    ) -> Events:
        """Add a batch of fixes; return the events they confirm.

        ``vehicle`` are int codes into ``vehicles`` (the :class:`ingest.batch.FixFrame`
        convention), ``ts_us`` event time in epoch µs, ``lon_deg`` / ``lat_deg`` WGS84.
        """
        code = np.asarray(vehicle, dtype=np.int64).reshape(-1)
        ts = np.asarray(ts_us, dtype=np.int64).reshape(-1)
        lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
        lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
        n = len(ts)
        if not (len(code) == len(lon) == len(lat) == n):
            raise ValueError("vehicle, ts_us, lon_deg and lat_deg must have the same length")
        if n == 0:
            return _EMPTY
        if int(code.min()) < 0 or int(code.max()) >= len(vehicles):
            raise ValueError("vehicle has codes outside vehicles")
        gv = self._intern(vehicles)[code]

        # sort by (vehicle, time); drop unusable, late and duplicate fixes
        usable = (np.isfinite(lon) & np.isfinite(lat)
                  & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))  # fmt: skip
        order = np.lexsort((ts, gv))
        order = order[usable[order]]
        gv, ts, lon, lat = gv[order], ts[order], lon[order], lat[order]
        fresh = ts > self._last_ts[gv]
        fresh[1:] &= (gv[1:] != gv[:-1]) | (ts[1:] != ts[:-1])
        self.ignored_fixes += int(len(fresh) - fresh.sum())
        gv, ts, lon, lat = gv[fresh], ts[fresh], lon[fresh], lat[fresh]
        n = len(ts)
        if n == 0:
            return _EMPTY

        # per vehicle: positions, previous fix (carried across batches), sparse gaps
        new_vehicle = np.ones(n, bool)
        new_vehicle[1:] = gv[1:] != gv[:-1]
        starts = np.flatnonzero(new_vehicle)
        group = np.cumsum(new_vehicle) - 1
        pos = np.arange(n) - starts[group]
        batch_vehicles = gv[starts]
        count = np.zeros(len(self._vehicle_ids), np.int64)
        count[batch_vehicles] = np.diff(np.append(starts, n))
        prev_ts = np.concatenate([[NO_TIME], ts[:-1]])
        prev_lon = np.concatenate([[np.nan], lon[:-1]])
        prev_lat = np.concatenate([[np.nan], lat[:-1]])
        prev_ts[starts] = self._last_ts[batch_vehicles]
        prev_lon[starts] = self._last_lon[batch_vehicles]
        prev_lat[starts] = self._last_lat[batch_vehicles]
        has_prev = prev_ts != NO_TIME
        dt = np.where(has_prev, ts - np.where(has_prev, prev_ts, 0), 0)
        sparse = has_prev & (dt > self.sparse_gap_us) & (dt <= self.max_gap_us)
        ends = np.append(starts[1:], n) - 1
        self._last_ts[batch_vehicles] = ts[ends]
        self._last_lon[batch_vehicles] = lon[ends]
        self._last_lat[batch_vehicles] = lat[ends]

        fences = self._fences
        n_f = len(fences)
        if n_f == 0:
            return _EMPTY

        # member rows: one spatial query for the batch, entry test on its pairs only
        mk, mf = fences.membership_exit(lon, lat)
        m_in = fences.contains(lon[mk], lat[mk], mf)

        # virtual rows where sparse segments cross entry fences
        sk = np.flatnonzero(sparse)
        seg, vf, first, last = fences.crossings(prev_lon[sk], prev_lat[sk], lon[sk], lat[sk])
        vk = sk[seg]
        a_in = fences.contains(prev_lon[vk], prev_lat[vk], vf)
        b_in = fences.contains(lon[vk], lat[vk], vf)
        v_k = np.concatenate([vk[~a_in], vk[~b_in]])
        v_f = np.concatenate([vf[~a_in], vf[~b_in]])
        v_frac = np.concatenate([first[~a_in], last[~b_in]])
        v_ts = prev_ts[v_k] + np.rint(v_frac * dt[v_k]).astype(np.int64)
        v_ts = np.clip(v_ts, prev_ts[v_k], ts[v_k])

        # active pairs: those with rows, and carried pairs of vehicles in this batch
        carried = self._pairs
        in_batch = np.zeros(len(self._vehicle_ids), bool)
        in_batch[batch_vehicles] = True
        active = in_batch[carried.vehicle]
        row_key = np.concatenate([gv[mk] * n_f + mf, gv[v_k] * n_f + v_f])
        carried_key = carried.vehicle * n_f + carried.fence
        keys = np.union1d(row_key, carried_key[active])
        n_p = len(keys)
        if n_p == 0:
            return _EMPTY
        z = np.zeros(n_p, np.int64)
        # a fresh pair: outside, nothing pending (its head is followed by a break)
        head = _Pairs(keys // n_f, keys % n_f, np.full(n_p, _OUT, np.int8), z.copy(),
                      z.copy(), z.copy(), z.copy(), np.zeros(n_p, bool),
                      np.full(n_p, self.min_fixes, np.int64))  # fmt: skip
        slot = np.searchsorted(keys, carried_key[active])
        src = carried.take(active)
        for name in list(_Pairs.__dataclass_fields__)[2:]:
            getattr(head, name)[slot] = getattr(src, name)
        head.out_count[slot[src.state == _RUN]] = 0

        events, pairs = self._rows(head, keys, row_key,
                            np.concatenate([2 * pos[mk], 2 * pos[v_k] - 1]),
                            np.concatenate([ts[mk], v_ts]),
                            np.concatenate([m_in, np.ones(len(v_k), bool)]),
                            np.concatenate([np.zeros(len(mk), bool), np.ones(len(v_k), bool)]),
                            count)  # fmt: skip
        merged = _Pairs.concat([carried.take(~active), pairs])
        self._pairs = merged.take(np.lexsort((merged.fence, merged.vehicle)))
        return events

    # ------------------------------------------------------------------ internals

    def _intern(self, vehicles: Sequence[str]) -> Int64Array:
        codes = np.empty(len(vehicles), np.int64)
        for k, vehicle_id in enumerate(vehicles):  # the batch's vehicles, not its fixes
            c = self._vehicle_code.get(vehicle_id)
            if c is None:
                c = self._vehicle_code[vehicle_id] = len(self._vehicle_ids)
                self._vehicle_ids.append(vehicle_id)
            codes[k] = c
        extra = len(self._vehicle_ids) - len(self._last_ts)
        if extra:
            self._last_ts = np.concatenate([self._last_ts, np.full(extra, NO_TIME)])
            self._last_lon = np.concatenate([self._last_lon, np.full(extra, np.nan)])
            self._last_lat = np.concatenate([self._last_lat, np.full(extra, np.nan)])
        return codes

    def _rows(self, head: _Pairs, keys: Int64Array, row_key: Int64Array, row_pos2: Int64Array,
              row_ts: Int64Array, row_in: BoolArray, row_virtual: BoolArray,
              count: Int64Array) -> tuple[Events, _Pairs]:  # fmt: skip
        """The per-pair rules over member and virtual rows: events and the new state.

        Rows of a pair: one head row carrying its state (position -2, before the batch),
        then its member rows at ``2 * position`` of their fix in the vehicle's batch and
        virtual rows at ``2 * position - 1`` (between that fix and the one before).
        Between two rows, the fixes of the vehicle that are not rows of the pair are
        outside its exit fence.
        """
        m_fix = self.min_fixes
        n_p = len(keys)
        n_f = max(len(self._fences), 1)
        key = np.concatenate([keys, row_key])
        pos2 = np.concatenate([np.full(n_p, -2, np.int64), row_pos2])
        is_head = np.arange(len(key)) < n_p
        ts = np.concatenate([head.t_last, row_ts])
        order = np.lexsort((ts, pos2, key))
        key, pos2, ts, is_head = key[order], pos2[order], ts[order], is_head[order]
        pair = np.cumsum(is_head) - 1  # rows of a pair follow its head; heads in key order
        state = head.state[pair]
        inn = np.concatenate([head.state == _RUN, row_in])[order]
        virtual = np.concatenate([np.zeros(n_p, bool), row_virtual])[order]
        weight = np.concatenate([head.run_len, np.ones(len(row_key), np.int64)])[order]
        weight = np.where(inn, weight, 0)
        n = len(key)

        # outside fixes after each row: up to the pair's next row, or to the batch's end
        last_of_pair = np.ones(n, bool)
        last_of_pair[:-1] = key[1:] != key[:-1]
        nxt = np.append(pos2[1:], 0)
        between = -((-nxt) // 2) - pos2 // 2 - 1
        trailing = count[key // n_f] - 1 - pos2 // 2
        gap = np.where(last_of_pair, trailing, between)
        gap[is_head] += head.out_count
        brk = gap >= m_fix  # a confirmed exit run follows the row

        # episodes: separated by confirmed exit runs; only a pair's first one starts inside
        ep_start = is_head.copy()
        ep_start[1:] |= brk[:-1]
        ep = np.cumsum(ep_start) - 1
        ep_first = np.flatnonzero(ep_start)
        ep_last = np.append(ep_first[1:], n) - 1
        init_in = is_head[ep_first] & (state[ep_first] == _IN)

        # runs: consecutive rows in the entry fence with no outside fix between them
        cont = np.zeros(n, bool)  # row continues the run of the row before it
        cont[1:] = inn[1:] & inn[:-1] & (gap[:-1] == 0) & ~ep_start[1:]
        run_start = inn & ~cont
        run_end = inn.copy()
        run_end[:-1] &= ~cont[1:]
        rs, re = np.flatnonzero(run_start), np.flatnonzero(run_end)
        rid = np.cumsum(run_start) - 1
        cw = np.cumsum(weight)
        cv = np.cumsum(virtual)
        run_n = cw[re] - cw[rs] + weight[rs]
        run_virtual = cv[re] - cv[rs] + virtual[rs]
        t0 = np.where(is_head[rs], head.run_start[pair[rs]], ts[rs])
        run_ep = ep[rs]
        confirmed = ((run_n >= m_fix) | (ts[re] - t0 >= self.min_dwell_us) | (run_virtual > 0)
                     ) & ~init_in[run_ep]  # fmt: skip

        # ENTER: the first confirmed run of each episode
        cr = np.flatnonzero(confirmed)
        e_ep, e_idx = np.unique(run_ep[cr], return_index=True)
        e_run = cr[e_idx]
        n_ep = len(ep_first)
        entered = init_in.copy()
        entered[e_ep] = True
        enter_row = np.full(n_ep, n, np.int64)
        enter_row[init_in] = ep_first[init_in]
        enter_row[e_ep] = rs[e_run]
        t_enter = np.zeros(n_ep, np.int64)
        t_enter[init_in] = head.t_enter[pair[ep_first[init_in]]]
        t_enter[e_ep] = t0[e_run]
        dwell_done = np.zeros(n_ep, bool)
        dwell_done[init_in] = head.dwell_done[pair[ep_first[init_in]]]

        # DWELL: the first member row at least dwell_us after ENTER, once per visit
        row_ep = ep
        cand = np.flatnonzero(
            ~is_head & entered[row_ep] & ~dwell_done[row_ep]
            & (np.arange(n) >= enter_row[row_ep])
            & (ts - t_enter[row_ep] >= self.dwell_us))
        d_ep, d_idx = np.unique(row_ep[cand], return_index=True)
        d_row = cand[d_idx]
        dwell_done[d_ep] = True

        # EXIT: an entered episode that a confirmed exit run closes
        x_ep = np.flatnonzero(entered & brk[ep_last])
        x_row = ep_last[x_ep]

        # carried state: from each pair's last row
        lr = np.flatnonzero(last_of_pair)
        lep = ep[lr]
        now_in = ~brk[lr] & entered[lep]
        run_open = ~brk[lr] & ~entered[lep] & inn[lr] & (gap[lr] == 0)
        lrun = rid[lr]
        st = np.where(now_in, _IN, _RUN).astype(np.int8)
        keep = now_in | run_open
        kept_run = np.where(run_open, lrun, 0)
        new = _Pairs(
            keys // n_f, keys % n_f, st,
            np.where(run_open, run_n[kept_run] if len(run_n) else 0, 0),
            np.where(run_open, t0[kept_run] if len(t0) else 0, 0),
            np.where(now_in, t_enter[lep], 0),
            ts[lr],
            np.where(now_in, dwell_done[lep], False),
            np.where(now_in, gap[lr], 0),
        ).take(keep)

        # events
        ev_row = np.concatenate([ep_first[e_ep], d_row, x_row])  # a row of the pair
        ev_kind = np.concatenate([np.full(len(e_ep), ENTER), np.full(len(d_row), DWELL),
                                  np.full(len(x_row), EXIT)])  # fmt: skip
        ev_ts = np.concatenate([t_enter[e_ep], ts[d_row], ts[x_row]])
        ev_dwell = np.concatenate([
            np.full(len(e_ep), np.nan),
            (ts[d_row] - t_enter[d_ep]) / S_US,
            (ts[x_row] - t_enter[x_ep]) / S_US,
        ])
        if len(ev_ts) == 0:
            return _EMPTY, new
        ev_vehicle = np.array(self._vehicle_ids)[key[ev_row] // n_f]
        ev_stop = self._fences.stop_ids[key[ev_row] % n_f]
        order = np.lexsort((ev_kind, ev_stop, ev_vehicle, ev_ts))
        return Events(ev_vehicle[order], ev_stop[order], KINDS[ev_kind[order]],
                      ev_ts[order], ev_dwell[order]), new  # fmt: skip
