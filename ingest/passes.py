"""From tag reads to gate passes, vectorized over a batch (pure NumPy, no I/O).

A parcel carried through a dock door is seen by the gate reader dozens of times on two
antennas, one facing the hall and one facing the dock (the van). :class:`PassTracker`
turns a stream of :class:`Reads` into :class:`Passes`, one row per parcel and crossing.

Grouping (the definition; batching never changes it for reads that arrive in order)
    Reads are grouped per (gate, EPC) in event-time order. A read joins the current pass
    of its (gate, EPC) when ``ts_us - last_us <= gap_us`` and
    ``ts_us - first_us <= max_duration_us``; otherwise it starts a new pass. The second
    rule bounds a pass: a tag parked at the door yields one pass per ``max_duration_us``
    (default 60 s) instead of one pass that grows for ever, and the open state stays
    bounded.

Closing, on event time only
    Each gate has a watermark: the newest ``ts_us`` seen from it. A pass is closed, and
    returned by :meth:`PassTracker.update`, once no read that arrives in order could
    still join it: ``watermark - last_us > gap_us`` or
    ``watermark - first_us > max_duration_us``. The wall clock is never consulted. When a
    gate goes silent its watermark stops, so its last passes stay open; the caller closes
    them with :meth:`PassTracker.flush`, passing its own notion of "now" (for instance
    the host receipt time of the newest frame, or the wall clock when the serial line has
    been quiet for a while), or ``None`` to close everything (shutdown, end of a replay).

Out of order
    Reads are sorted within a batch, and a read may be older than reads of earlier
    batches: it is merged into the open pass it falls next to, exactly as if it had
    arrived in order. Passes are emitted once and never amended: a late read that falls
    inside the window of a pass already returned (``first_us - gap_us <= ts_us <=
    min(last_us + gap_us, first_us + max_duration_us)``, same gate and EPC) is counted in
    :attr:`PassTracker.late_reads` and otherwise ignored, so it does not start a spurious
    one-read pass. Returned passes are remembered for ``late_us`` of their gate's event
    time (default 30 s); a read that is really outside every remembered window starts a
    new pass, which closes at once if the watermark is already past it. When a late read
    bridges an open pass and earlier reads, the pass may span up to one more
    ``max_duration_us``; the bound on state still holds.

Direction (exactly)
    Antenna roles come from the gate's configuration, ``(gate_id, antenna) -> "hall" |
    "dock"``; reads on any other antenna (or antenna -1, unknown) count in ``reads`` but
    not in the direction. Per pass, ``hall_mean_us`` and ``dock_mean_us`` are the mean
    read times on each role (means, not medians, so that a pass open across batches is
    summarised by counts and sums). With ``n_h``, ``n_d`` the reads per role,
    ``D = last_us - first_us``, ``delta = dock_mean_us - hall_mean_us``:

    - separation ``s = min(1, 2 * |delta| / D)`` (0 when ``D == 0``): 1 when the hall
      reads all precede the dock reads and each side covers half the pass;
    - support ``b = m / (m + 2)`` with ``m = min(n_h, n_d)``: one read on the weaker
      side gives 1/3, eight give 0.8;
    - both roles seen and ``s >= MIN_SEPARATION`` (0.1): direction ``"out"`` (hall then
      dock: into the van) when ``delta > 0``, ``"in"`` when ``delta < 0``; confidence
      ``0.3 + 0.7 * s * b``, in (0.3, 1];
    - both roles seen but ``s < MIN_SEPARATION`` (interleaved: no order can be told):
      ``"unknown"``, confidence ``0.3 * b`` (< 0.3);
    - one role only, or none: ``"unknown"``, confidence ``0.2 * n / (n + 2)`` with ``n`` the
      pass's reads (< 0.2).

    ``sequence`` summarises the order of the roles: ``"H>D"``, ``"D>H"``, ``"H~D"``
    (interleaved), ``"H"``, ``"D"`` or ``"-"`` (no read on a role antenna).

Representation
    Input gates and EPCs are int32 codes into per-batch lists of strings (``gate_ids``,
    ``epc_ids``), the convention of :class:`ingest.batch.FixFrame`: the grouping sorts
    integers, and only the distinct EPCs (a few per pass, not per read) are compared as
    strings, once per batch, to line them up with the open state. No EPC width is
    assumed (a ``U24`` array would cut EPCs longer than 96 bits, which Gen2 allows and the Mercury
    protocol carries), and no interning table grows with the day. :meth:`Reads.of` builds
    the codes from one string per read. Output passes carry strings.

State, all NumPy arrays: at most one open pass per (gate, EPC) as counts, sums and
extremes; the passes returned in the last ``late_us`` of event time (gate, EPC, first,
last); one watermark per gate. A tracker is not thread-safe: one ingest loop owns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

# role codes of a read
OTHER: Final = 0
HALL: Final = 1
DOCK: Final = 2
ROLE_CODES: Final[Mapping[str, int]] = {"hall": HALL, "dock": DOCK}

MIN_SEPARATION: Final = 0.1  # below it, both roles seen but no order can be told
ORDERED_FLOOR: Final = 0.3  # confidence of a directed pass lies in (0.3, 1]
INTERLEAVED_CAP: Final = 0.3  # "unknown" with both roles: 0.3 * support
ONE_ROLE_CAP: Final = 0.2  # "unknown" with one role: 0.2 * n / (n + 2)

DIRECTIONS: Final = np.array(["unknown", "out", "in"])
SEQUENCES: Final = np.array(["-", "H", "D", "H>D", "D>H", "H~D"])

NO_TIME: Final = np.iinfo(np.int64).min  # watermark of a gate that has sent nothing

StrArray = NDArray[np.str_]
Int64Array = NDArray[np.int64]
Float64Array = NDArray[np.float64]


def _strings(values: Sequence[str] | StrArray) -> StrArray:
    return np.asarray(values, dtype=np.str_)


@dataclass(frozen=True, slots=True)
class Reads:
    """A batch of tag reads, one row per read.

    ``gate`` and ``epc`` are codes into ``gate_ids`` and ``epc_ids`` (EPCs as the
    decoders give them: upper-case hex); ``ts_us`` is event time (int64 epoch µs from
    the reader or the host); ``antenna`` is -1 when unknown; ``rssi`` is NaN when the
    reader gave none (any unit, as long as it is the same for a gate).
    """

    gate: NDArray[np.int32]
    epc: NDArray[np.int32]
    ts_us: Int64Array
    antenna: NDArray[np.int16]
    rssi: Float64Array
    gate_ids: Sequence[str] | StrArray
    epc_ids: Sequence[str] | StrArray

    def __post_init__(self) -> None:
        n = len(self.ts_us)
        if any(len(a) != n for a in (self.gate, self.epc, self.antenna, self.rssi)):
            raise ValueError("Reads columns must have the same length")
        for name, codes, ids in (("gate", self.gate, self.gate_ids),
                                 ("epc", self.epc, self.epc_ids)):
            if n and (int(codes.min()) < 0 or int(codes.max()) >= len(ids)):
                raise ValueError(f"Reads.{name} has codes outside {name}_ids")

    def __len__(self) -> int:
        return len(self.ts_us)

    @classmethod
    def of(
        cls,
        gate_id: str | Sequence[str] | StrArray,
        epc: Sequence[str] | StrArray,
        ts_us: ArrayLike,
        antenna: ArrayLike,
        rssi: ArrayLike,
    ) -> Reads:
        """Build a batch from strings per read (``gate_id`` may be one string for all)."""
        epc_ids, epc_code = np.unique(_strings(epc), return_inverse=True)
        ts = np.asarray(ts_us, dtype=np.int64).reshape(-1)
        if isinstance(gate_id, str):
            gate_ids: StrArray = np.array([gate_id])
            gate_code = np.zeros(len(ts), np.int32)
        else:
            gate_ids, inverse = np.unique(_strings(gate_id), return_inverse=True)
            gate_code = inverse.astype(np.int32).reshape(-1)
        return cls(
            gate_code,
            epc_code.astype(np.int32).reshape(-1),
            ts,
            np.asarray(antenna, dtype=np.int16).reshape(-1),
            np.asarray(rssi, dtype=np.float64).reshape(-1),
            gate_ids,
            epc_ids,
        )


@dataclass(frozen=True, slots=True)
class Passes:
    """Closed passes, one row per parcel and crossing, ordered by (first_us, gate_id, epc).

    ``first_us`` and ``last_us`` are the first and last read (``gate_pass.time`` and
    ``last_seen``); ``peak_rssi`` is NaN when no read had one; ``direction`` is
    ``"in"``, ``"out"`` or ``"unknown"`` with its ``confidence`` in [0, 1]; the role
    columns explain it (see the module docstring): reads and mean read time per role
    (NaN when none) and the compressed role ``sequence``.
    """

    gate_id: StrArray
    epc: StrArray
    first_us: Int64Array
    last_us: Int64Array
    reads: Int64Array
    peak_rssi: Float64Array
    direction: StrArray
    confidence: Float64Array
    hall_reads: Int64Array
    dock_reads: Int64Array
    hall_mean_us: Float64Array
    dock_mean_us: Float64Array
    sequence: StrArray

    def __len__(self) -> int:
        return len(self.first_us)

    @staticmethod
    def concat(parts: Sequence[Passes]) -> Passes:
        """Join results (say of ``update`` then ``flush``), keeping each part's rows in order."""
        if not parts:
            return _EMPTY_PASSES
        return Passes(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in Passes.__dataclass_fields__))

    @staticmethod
    def empty() -> Passes:
        return _EMPTY_PASSES


@dataclass(frozen=True, slots=True)
class _Agg:
    """Per-pass aggregates, mergeable: role time sums are offsets from ``first_us``."""

    first_us: Int64Array
    last_us: Int64Array
    reads: Int64Array
    peak_rssi: Float64Array
    hall_reads: Int64Array
    dock_reads: Int64Array
    hall_sum_us: Int64Array
    dock_sum_us: Int64Array

    def __len__(self) -> int:
        return len(self.first_us)

    def take(self, index: NDArray[np.bool_] | NDArray[np.intp]) -> _Agg:
        return _Agg(*(getattr(self, name)[index] for name in _Agg.__dataclass_fields__))

    @staticmethod
    def empty() -> _Agg:
        i64 = np.empty(0, np.int64)
        return _Agg(i64, i64, i64, np.empty(0, np.float64), i64, i64, i64, i64)


@dataclass(frozen=True, slots=True)
class _Keyed:
    """Passes with their keys: the tracker's gate codes and EPC strings."""

    gate: NDArray[np.int32]
    epc: StrArray
    agg: _Agg

    def __len__(self) -> int:
        return len(self.gate)

    @staticmethod
    def empty() -> _Keyed:
        return _Keyed(np.empty(0, np.int32), np.empty(0, np.str_), _Agg.empty())


@dataclass(frozen=True, slots=True)
class _Closed:
    """Passes already returned, remembered for ``late_us`` to absorb late reads."""

    gate: NDArray[np.int32]
    epc: StrArray
    first_us: Int64Array
    last_us: Int64Array

    def __len__(self) -> int:
        return len(self.gate)


def _describe(gate_id: StrArray, epc: StrArray, agg: _Agg) -> Passes:
    """Direction, confidence and role summary of closed passes, sorted for output."""
    n_h, n_d = agg.hall_reads, agg.dock_reads
    has_h, has_d = n_h > 0, n_d > 0
    both = has_h & has_d
    hall_rel = np.full(len(agg), np.nan)
    dock_rel = np.full(len(agg), np.nan)
    np.divide(agg.hall_sum_us, n_h, out=hall_rel, where=has_h)
    np.divide(agg.dock_sum_us, n_d, out=dock_rel, where=has_d)
    duration = (agg.last_us - agg.first_us).astype(np.float64)
    delta = np.where(both, dock_rel - hall_rel, 0.0)
    sep = np.zeros(len(agg))
    np.divide(2.0 * np.abs(delta), duration, out=sep, where=both & (duration > 0))
    sep = np.minimum(sep, 1.0)
    weak = np.minimum(n_h, n_d).astype(np.float64)
    support = weak / (weak + 2.0)
    n = agg.reads.astype(np.float64)
    ordered = both & (sep >= MIN_SEPARATION)
    out = ordered & (delta > 0)
    confidence = np.where(
        ordered,
        ORDERED_FLOOR + (1.0 - ORDERED_FLOOR) * sep * support,
        np.where(both, INTERLEAVED_CAP * support, ONE_ROLE_CAP * n / (n + 2.0)),
    )
    direction = np.where(ordered, np.where(out, 1, 2), 0)
    sequence = np.where(
        ordered, np.where(out, 3, 4),
        np.where(both, 5, np.where(has_h, 1, np.where(has_d, 2, 0))),
    )
    order = np.lexsort((epc, gate_id, agg.first_us))
    first = agg.first_us.astype(np.float64)
    return Passes(
        gate_id=gate_id[order],
        epc=epc[order],
        first_us=agg.first_us[order],
        last_us=agg.last_us[order],
        reads=agg.reads[order],
        peak_rssi=agg.peak_rssi[order],
        direction=DIRECTIONS[direction[order]],
        confidence=confidence[order],
        hall_reads=n_h[order],
        dock_reads=n_d[order],
        hall_mean_us=(first + hall_rel)[order],
        dock_mean_us=(first + dock_rel)[order],
        sequence=SEQUENCES[sequence[order]],
    )


_EMPTY_PASSES: Final = _describe(np.empty(0, np.str_), np.empty(0, np.str_), _Agg.empty())


def _ranges(start: NDArray[np.intp], stop: NDArray[np.intp]
            ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Concatenated ``arange(start[k], stop[k])`` and, for each element, its ``k``."""
    lengths = np.maximum(stop - start, 0)
    owner = np.repeat(np.arange(len(start)), lengths)
    offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return start[owner] + offset, owner


class PassTracker:
    """Streams tag reads into passes; see the module docstring for the exact rules.

    ``roles`` maps ``(gate_id, antenna)`` to ``"hall"`` or ``"dock"``; a gate or antenna
    not in it still makes passes, with direction ``"unknown"``. :meth:`set_roles`
    replaces the roles (manifest reload); reads already in open passes keep their role.
    """

    def __init__(
        self,
        roles: Mapping[tuple[str, int], str],
        *,
        gap_us: int = 3_000_000,
        max_duration_us: int = 60_000_000,
        late_us: int = 30_000_000,
    ) -> None:
        if gap_us <= 0 or max_duration_us <= 0 or late_us < 0:
            raise ValueError("gap_us and max_duration_us must be > 0, late_us >= 0")
        self.gap_us: Final = int(gap_us)
        self.max_duration_us: Final = int(max_duration_us)
        self.late_us: Final = int(late_us)
        self.late_reads = 0  # late reads absorbed by an already returned pass
        self._gate_ids: list[str] = []
        self._gate_code: dict[str, int] = {}
        self._watermark: Int64Array = np.empty(0, np.int64)
        self._roles: dict[tuple[str, int], int] = {}
        self._role_table: NDArray[np.int8] = np.zeros((0, 1), np.int8)
        self._open = _Keyed.empty()
        self._closed = _Closed(np.empty(0, np.int32), np.empty(0, np.str_),
                               np.empty(0, np.int64), np.empty(0, np.int64))
        self.set_roles(roles)

    # ------------------------------------------------------------------ public

    @property
    def open_count(self) -> int:
        """Passes currently open (the size of the state)."""
        return len(self._open)

    def watermark_us(self, gate_id: str) -> int | None:
        """Newest read time seen from the gate, or None."""
        code = self._gate_code.get(gate_id)
        if code is None or self._watermark[code] == NO_TIME:
            return None
        return int(self._watermark[code])

    def set_roles(self, roles: Mapping[tuple[str, int], str]) -> None:
        """Replace the antenna roles; ValueError on a role other than hall/dock or antenna < 0."""
        parsed: dict[tuple[str, int], int] = {}
        for (gate_id, antenna), role in roles.items():
            if role not in ROLE_CODES or antenna < 0:
                raise ValueError(f"bad antenna role {(gate_id, antenna)!r} -> {role!r}")
            parsed[(gate_id, int(antenna))] = ROLE_CODES[role]
        self._roles = parsed
        self._intern([g for g, _ in parsed])
        self._build_role_table()

    def update(self, reads: Reads) -> Passes:
        """Add a batch of reads; return the passes that the batch's watermarks close."""
        if len(reads) == 0:
            return _EMPTY_PASSES
        gate = self._intern(_strings(reads.gate_ids).tolist())[reads.gate]
        ts = np.asarray(reads.ts_us, dtype=np.int64)
        antenna = np.asarray(reads.antenna, dtype=np.int64)
        rssi = np.asarray(reads.rssi, dtype=np.float64)
        np.maximum.at(self._watermark, gate, ts)

        # one set of EPC codes for the batch, the open passes and the remembered ones
        # (np.unique sorts: codes follow string order)
        batch_ids = _strings(reads.epc_ids)
        n_b, n_o = len(batch_ids), len(self._open)
        vocab, inverse = np.unique(
            np.concatenate([batch_ids, self._open.epc, self._closed.epc]), return_inverse=True)
        epc = inverse[:n_b][reads.epc]
        open_epc = inverse[n_b:n_b + n_o]
        closed_epc = inverse[n_b + n_o:]

        late = self._late(gate, epc, ts, closed_epc)
        if late.any():
            self.late_reads += int(late.sum())
            keep = ~late
            gate, epc, ts, antenna, rssi = (
                gate[keep], epc[keep], ts[keep], antenna[keep], rssi[keep])

        role = self._role_of(gate, antenna)
        p_gate, p_epc, agg = self._merge(gate, epc, ts, role, rssi, open_epc)
        wm = self._watermark[p_gate]
        done = (wm - agg.last_us > self.gap_us) | (wm - agg.first_us > self.max_duration_us)
        return self._close(_Keyed(p_gate, vocab[p_epc], agg), done)

    def flush(self, now_us: int | None = None) -> Passes:
        """Close the open passes idle at ``now_us``, on every gate; all of them when None.

        ``now_us`` stands in for the watermark of gates that have gone silent: passes with
        ``now_us - last_us > gap_us`` or ``now_us - first_us > max_duration_us`` close.
        It does not move the watermarks; a read of a flushed pass that arrives afterwards
        is absorbed as a late read (see :attr:`late_reads`).
        """
        agg = self._open.agg
        if now_us is None:
            done = np.ones(len(agg), bool)
        else:
            done = ((now_us - agg.last_us > self.gap_us)
                    | (now_us - agg.first_us > self.max_duration_us))
        return self._close(self._open, done)

    # ------------------------------------------------------------------ internals

    def _intern(self, gate_ids: Sequence[str]) -> NDArray[np.int32]:
        codes = np.empty(len(gate_ids), np.int32)
        grew = False
        for k, gate_id in enumerate(gate_ids):  # the few gates of a batch, not its reads
            code = self._gate_code.get(gate_id)
            if code is None:
                code = self._gate_code[gate_id] = len(self._gate_ids)
                self._gate_ids.append(gate_id)
                grew = True
            codes[k] = code
        if grew:
            extra = len(self._gate_ids) - len(self._watermark)
            self._watermark = np.concatenate([self._watermark, np.full(extra, NO_TIME)])
            self._build_role_table()
        return codes

    def _build_role_table(self) -> None:
        width = 1 + max((a for _, a in self._roles), default=0)
        table = np.full((len(self._gate_ids), width), OTHER, np.int8)
        for (gate_id, antenna), role in self._roles.items():
            table[self._gate_code[gate_id], antenna] = role
        self._role_table = table

    def _role_of(self, gate: NDArray[np.int32], antenna: Int64Array) -> NDArray[np.int8]:
        known = (antenna >= 0) & (antenna < self._role_table.shape[1])
        role = self._role_table[gate, np.where(known, antenna, 0)]
        return np.where(known, role, OTHER).astype(np.int8)

    def _late(self, gate: NDArray[np.int32], epc: NDArray[np.intp], ts: Int64Array,
              closed_epc: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Reads inside the window of a pass already returned, for the same gate and EPC."""
        c = self._closed
        late = np.zeros(len(ts), bool)
        if len(c) == 0:
            return late
        n_c = len(c)
        end = np.minimum(c.last_us + self.gap_us, c.first_us + self.max_duration_us)
        g = np.concatenate([c.gate, gate])
        e = np.concatenate([closed_epc, epc])
        t = np.concatenate([c.first_us - self.gap_us, ts])
        is_read = np.arange(n_c + len(ts)) >= n_c
        order = np.lexsort((is_read, t, e, g))
        # for each read, the remembered window that starts last at or before it in the
        # sorted order (positions, not indices: the remembered windows are in no order);
        # if it is of the read's key, it is the only one that can hold it (windows of one
        # key never nest)
        sorted_read = is_read[order]
        before = np.maximum.accumulate(np.where(sorted_read, -1, np.arange(len(order))))
        pos = np.flatnonzero(sorted_read)
        w, r = np.where(before[pos] >= 0, order[np.maximum(before[pos], 0)], -1), order[pos]
        wc = np.maximum(w, 0)
        late[r - n_c] = (w >= 0) & (g[wc] == g[r]) & (e[wc] == e[r]) & (t[r] <= end[wc])
        return late

    def _merge(
        self, gate: NDArray[np.int32], epc: NDArray[np.intp], ts: Int64Array,
        role: NDArray[np.int8], rssi: Float64Array, open_epc: NDArray[np.intp],
    ) -> tuple[NDArray[np.int32], NDArray[np.intp], _Agg]:
        """Open passes and new reads, sorted on (gate, epc, time) and split into passes."""
        o = self._open.agg
        n_o, n_r = len(o), len(ts)
        if n_o + n_r == 0:
            return np.empty(0, np.int32), np.empty(0, np.intp), _Agg.empty()
        zeros = np.zeros(n_r, np.int64)
        is_read = np.arange(n_o + n_r) >= n_o
        g = np.concatenate([self._open.gate, gate])
        e = np.concatenate([open_epc, epc])
        f = np.concatenate([o.first_us, ts])
        order = np.lexsort((is_read, f, e, g))
        g, e, f, is_read = g[order], e[order], f[order], is_read[order]
        last = np.concatenate([o.last_us, ts])[order]
        m = len(f)

        # A new pass starts on a new key, or after a gap. Items are reads (points) and at
        # most one open pass per key (an interval: every other pass of a key has been
        # closed by the read that followed it), so the latest time seen before item i of
        # its key is the larger of item i-1's last and the preceding open pass's last.
        new_key = np.ones(m, bool)
        new_key[1:] = (g[1:] != g[:-1]) | (e[1:] != e[:-1])
        open_before = np.maximum.accumulate(np.where(is_read, -1, np.arange(m)))
        prev_open = np.concatenate([[-1], open_before[:-1]])
        po = np.maximum(prev_open, 0)
        seen = np.concatenate([[NO_TIME], last[:-1]])
        seen = np.where((prev_open >= 0) & (g[po] == g) & (e[po] == e),
                        np.maximum(seen, last[po]), seen)
        start = new_key
        start[1:] |= f[1:] - seen[1:] > self.gap_us

        # Bound the duration: in a segment, the first item more than max_duration_us
        # after its pass's first read starts the next pass. That rule is greedy, so it is
        # applied in rounds, each vectorized over the segments still too long.
        seg = np.flatnonzero(start)
        seg_end = np.append(seg[1:], m)
        long = np.maximum.reduceat(last, seg) - f[seg] > self.max_duration_us
        cur, end = seg[long], seg_end[long]
        while len(cur):
            idx, owner = _ranges(cur + 1, end)
            over = f[idx] > f[cur][owner] + self.max_duration_us
            hit, hit_owner = idx[over], owner[over]
            first_hit = np.ones(len(hit), bool)
            first_hit[1:] = hit_owner[1:] != hit_owner[:-1]
            cur, end = hit[first_hit], end[hit_owner[first_hit]]
            start[cur] = True

        ps = np.flatnonzero(start)
        first = f[ps]
        offset = f - first[np.cumsum(start) - 1]
        hn = np.concatenate([o.hall_reads, (role == HALL).astype(np.int64)])[order]
        dn = np.concatenate([o.dock_reads, (role == DOCK).astype(np.int64)])[order]
        hs = np.concatenate([o.hall_sum_us, zeros])[order]
        ds = np.concatenate([o.dock_sum_us, zeros])[order]
        agg = _Agg(
            first,
            np.maximum.reduceat(last, ps),
            np.add.reduceat(np.concatenate([o.reads, np.ones(n_r, np.int64)])[order], ps),
            np.fmax.reduceat(np.concatenate([o.peak_rssi, rssi])[order], ps),
            np.add.reduceat(hn, ps),
            np.add.reduceat(dn, ps),
            np.add.reduceat(hs + hn * offset, ps),
            np.add.reduceat(ds + dn * offset, ps),
        )
        return g[ps], e[ps], agg

    def _close(self, passes: _Keyed, done: NDArray[np.bool_]) -> Passes:
        """Keep the open part as state; remember and describe the closed part."""
        keep = ~done
        self._open = _Keyed(passes.gate[keep], passes.epc[keep], passes.agg.take(keep))
        gate, epc, agg = passes.gate[done], passes.epc[done], passes.agg.take(done)
        c = self._closed
        all_gate = np.concatenate([c.gate, gate])
        all_last = np.concatenate([c.last_us, agg.last_us])
        recent = self._watermark[all_gate] - all_last <= self.late_us
        self._closed = _Closed(
            all_gate[recent], np.concatenate([c.epc, epc])[recent],
            np.concatenate([c.first_us, agg.first_us])[recent], all_last[recent])
        if len(agg) == 0:
            return _EMPTY_PASSES
        return _describe(np.array(self._gate_ids)[gate], epc, agg)
