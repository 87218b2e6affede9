"""Device clocks that are off: each van's offset from the fleet, and its times corrected.

A van stamps its fixes, inventories, readings and proofs with its own clock; gates are
stamped by the host. A van whose clock runs 10 minutes ahead or behind would have its
events shifted by as much, and its positions would meet the gates' reads at the wrong
times. :class:`ClockTracker` estimates, per van, how far its clock is off, and the
pipeline subtracts that offset from everything the van stamped (the device's own time
is kept in ``gps_fix.device_time``).

The reference is the fleet's consensus, not the host clock alone: a day replayed at 50x
runs ahead of the wall clock for every van alike. Per batch, each van's *lag* is its
smallest ``received - ts`` (its freshest fix: data cannot arrive before it is stamped),
plus the offset applied to it; the reference lag is the median of the largest group of
vans whose lags agree within :data:`AGREE_US` (at least :data:`MIN_VANS` of them; a tie
goes to the group nearest the host clock). The vans of the batch are compared with each
other when there are enough of them and they agree; otherwise with the newest lag of
every van seen within :data:`WINDOW_US` of receipt time. A van's candidate offset is
the reference lag minus its own raw lag, in whole seconds.

- **Ahead** (candidate above the applied offset by more than :data:`AHEAD_US`): where
  the fleet keeps the host's time, nothing arrives before it happened, so the host's
  clock proves the van ahead by at least minus its lag; the offset is applied at once,
  the candidate where the proof agrees and else only the proof (a live van among vans
  flushing backlogs looks ahead of them). A fleet ahead of the host (a replay) gives no
  proof: the candidate is believed once it persisted :data:`AHEAD_CONFIRM_US` of
  receipt time, and :meth:`ClockTracker.undecided` says whose data must wait.
- **Behind** (below by more than :data:`BEHIND_US`) looks like late data: a van back
  from 20 minutes offline shows the same lag on its first messages. It is applied only
  once the candidates stayed within :data:`STEADY_US` of each other while the van's own
  time advanced :data:`CONFIRM_US` (a backlog flushing in order drops its lag by many
  seconds a batch). Until then the van's times are used as they came.
- An offset changes only past those tolerances, so a redelivered fix gets the time it
  got the first time; the offsets are kept in ``ingest_state`` (row ``clocks``).

With fewer than :data:`MIN_VANS` vans agreeing there is no reference and nothing
changes. Pure: arrays in, offsets out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

US = 1_000_000
AHEAD_US = 60 * US  # a van this far ahead of the fleet is corrected at once
BEHIND_US = 120 * US  # this far behind, once it persisted (a queue of late data is not a skew)
CONFIRM_US = 60 * US  # ... for this much of the van's own time
STEADY_US = 30 * US  # ... with its candidates within this of each other
AGREE_US = 30 * US  # vans whose lags are this close agree on the time
MIN_VANS = 2  # a consensus needs this many vans agreeing (and more than any other group)
WINDOW_US = 5 * US  # receipt time: other vans' lags compared when a batch holds few vans
AHEAD_CONFIRM_US = 10 * US  # receipt time: a van ahead of a replayed fleet, believed after
_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class ClockChange:
    vehicle_id: str
    offset_us: int  # now applied: device time minus corrected time
    was_us: int


@dataclass(slots=True)
class _Pending:
    """Candidates past the applied offset, waiting to be confirmed."""

    since_us: int  # at the first of them: the van's own time (behind) or receipt time (ahead)
    lo_us: int
    hi_us: int


def consensus_lag(lags_us: NDArray[np.int64]) -> int | None:
    """The reference lag of a set of vans' lags (see the module docstring), or None."""
    if len(lags_us) < MIN_VANS:
        return None
    s = np.sort(lags_us)
    ends = np.searchsorted(s, s + AGREE_US, side="right")
    sizes = ends - np.arange(len(s))
    best = int(sizes.max())
    if best < MIN_VANS:
        return None
    starts = np.flatnonzero(sizes == best)
    medians = [int(np.median(s[i:ends[i]])) for i in starts.tolist()]
    return min(medians, key=abs)  # a tie: the group nearest the host clock


def _confirmed(pending: dict[str, _Pending], van: str, candidate: int, at_us: int,
               after_us: int) -> int | None:  # fmt: skip
    """The offset, once the van's candidates stayed within :data:`STEADY_US` of each other
    while ``at_us`` (its own time, or receipt time) advanced ``after_us``; None before."""
    p = pending.get(van)
    if p is None or max(p.hi_us, candidate) - min(p.lo_us, candidate) > STEADY_US:
        pending[van] = _Pending(at_us, candidate, candidate)
        return None
    p.lo_us, p.hi_us = min(p.lo_us, candidate), max(p.hi_us, candidate)
    if at_us - p.since_us < after_us:
        return None
    return _whole_seconds((p.lo_us + p.hi_us) // 2)


def _whole_seconds(us: int) -> int:
    return round(us / US) * US


class ClockTracker:
    """Per van, the offset applied to its times. Not thread-safe: one pipeline owns it."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}  # vans whose clock is off, device - corrected (us)
        self._seen: dict[str, tuple[int, int]] = {}  # van -> (received_us, lag_us), newest
        self._pending: dict[str, _Pending] = {}  # behind: since the van's own time
        self._ahead: dict[str, _Pending] = {}  # ahead of a replayed fleet: since receipt time
        self.reference_us = 0  # the fleet's lag at the last consensus (0, the host's, before)

    def observe(self, vehicles: list[str], codes: NDArray[np.int32], ts_us: NDArray[np.int64],
                received_us: NDArray[np.int64]) -> list[ClockChange]:  # fmt: skip
        """Take one batch's valid fixes (raw device times) into the estimate; returns the
        offsets it changed (applied to this batch already by :meth:`offset_of`)."""
        if not len(ts_us):
            return []
        n = len(vehicles)
        lag = np.full(n, _MAX, np.int64)
        np.minimum.at(lag, codes, received_us - ts_us)
        newest = np.full(n, -_MAX, np.int64)
        np.maximum.at(newest, codes, ts_us)
        got = np.full(n, -_MAX, np.int64)
        np.maximum.at(got, codes, received_us)
        present = np.flatnonzero(lag != _MAX)
        # the vans agree on the time with their clocks set right as far as known: a van
        # whose offset is applied votes with the lag it has corrected
        of = self.offsets.get
        fixed = lag[present] + np.fromiter((of(vehicles[i], 0) for i in present.tolist()),
                                           np.int64, len(present))  # fmt: skip
        for i, f in zip(present.tolist(), fixed.tolist(), strict=True):
            self._seen[vehicles[i]] = (int(got[i]), f)
        ref = consensus_lag(fixed) if len(present) >= MIN_VANS else None
        if ref is None:  # too few vans in the batch, or they disagree: those seen lately
            now = int(received_us.max())
            self._seen = {v: s for v, s in self._seen.items() if now - s[0] <= WINDOW_US}
            ref = consensus_lag(np.fromiter((s[1] for s in self._seen.values()), np.int64))
        if ref is None:
            return []
        self.reference_us = ref
        out = []
        for i in present.tolist():
            change = self._decide(vehicles[i], _whole_seconds(ref - int(lag[i])), int(newest[i]),
                                  int(lag[i]), int(got[i]), ref)  # fmt: skip
            if change is not None:
                out.append(change)
        return out

    def _decide(self, van: str, candidate: int, newest_us: int, lag_us: int, received_us: int,
                ref_us: int) -> ClockChange | None:  # fmt: skip
        applied = self.offsets.get(van, 0)
        if candidate > applied + AHEAD_US:
            self._pending.pop(van, None)
            return self._ahead_by(van, candidate, applied, lag_us, received_us, ref_us)
        self._ahead.pop(van, None)
        if candidate >= applied - BEHIND_US:
            self._pending.pop(van, None)
            return None
        offset = _confirmed(self._pending, van, candidate, newest_us, CONFIRM_US)
        return None if offset is None else self._apply(van, offset, applied)

    def _ahead_by(self, van: str, candidate: int, applied: int, lag_us: int, received_us: int,
                  ref_us: int) -> ClockChange | None:  # fmt: skip
        """A van ahead of the fleet. Where the fleet keeps the host's time, the host's clock
        proves how far ahead the van is at least (its fix came that long before it was
        stamped): the offset is the candidate where the two agree, else only the proof (a
        live van among vans flushing their backlogs looks ahead of them, and is not). A
        fleet itself ahead of the host is a replay, and it has no such proof: the
        candidate is believed once it persisted :data:`AHEAD_CONFIRM_US` of receipt time
        (vans flushing after an outage look apart for a few seconds)."""
        if ref_us >= -AGREE_US:
            self._ahead.pop(van, None)
            proof = _whole_seconds(-lag_us)
            offset = candidate if candidate <= proof + AGREE_US else proof
            return self._apply(van, offset, applied) if offset > applied + AHEAD_US else None
        held_on = _confirmed(self._ahead, van, candidate, received_us, AHEAD_CONFIRM_US)
        return None if held_on is None else self._apply(van, held_on, applied)

    def undecided(self) -> set[str]:
        """The vans whose clock looks off and is not yet believed, where the stages must
        wait for it (a van ahead of a replayed fleet; a van behind looks late anyway)."""
        return set(self._ahead)

    def _apply(self, van: str, offset_us: int, was_us: int) -> ClockChange:
        self._pending.pop(van, None)
        self._ahead.pop(van, None)
        if offset_us:
            self.offsets[van] = offset_us
        else:
            self.offsets.pop(van, None)
        return ClockChange(van, offset_us, was_us)

    def offset_of(self, van: str) -> int:
        return self.offsets.get(van, 0)

    def state(self) -> dict[str, Any]:
        """What a restart needs (ingest_state row ``clocks``): the applied offsets."""
        return {"offsets_us": dict(sorted(self.offsets.items()))}

    def restore(self, state: Mapping[str, Any]) -> int:
        """The offsets of :meth:`state`; a malformed document raises ValueError and
        changes nothing. Returns the vans restored."""
        offsets = state.get("offsets_us") if isinstance(state, Mapping) else None
        if not isinstance(offsets, Mapping) or not all(
                isinstance(v, str) and type(o) is int and 0 < abs(o) < 2**62
                for v, o in offsets.items()):  # fmt: skip
            raise ValueError("clocks state: offsets_us must map vehicle ids to non-zero"
                             " integer microseconds")  # fmt: skip
        self.offsets = dict(offsets)
        self._pending.clear()
        self._ahead.clear()
        return len(self.offsets)
