"""Simulated RFID gate readers on pseudo-terminals: parcels carried through dock doors.

A :class:`GateSim` runs one :class:`SimGate` per gate. Each gate owns a pseudo-terminal
pair (``os.openpty``, the slave in raw mode) and a stable path: a symlink such as
``var/sim/gates/G-1`` to the slave's ``/dev/pts/N``. That path is the gate's ``url`` in the
manifest; pyserial opens it with ``serial_for_url(path)``. The simulator plays the reader
on the master side: it reads the host's commands there and writes the reader's frames,
built only with the encoders of :mod:`devices.rfid` (the inverse of the ingest's decoders).

What the readers see comes from a :class:`CarryPlanner`: a seeded stream of *carries*.
A carry is one EPC crossing one gate in one direction over 1.5-3 s, read 10-40 times a
second, RSSI rising then falling (peak mid-way), on the hall antenna first and the dock
antenna last when it goes ``"out"`` to a van (the reverse for ``"in"``). A van parked at
the dock (optional) is read on the dock antenna only (``"parked"``). The planner keeps
the ground truth, :class:`Carry`, with the reads and corrupted frames each gate wrote.

Per protocol (gate ``protocol``):

* ``mercury``: idle until the host starts continuous reading (``cmd_start_continuous``);
  then one 0x22 tag-record frame per read and a keep-alive every ``keepalive_s``, until
  ``cmd_stop_continuous``. The batch flow is answered too: ``cmd_read_tag_multiple``
  inventories for its timeout and replies with the tag count (one record per EPC and
  antenna, with its read count), ``cmd_get_tag_buffer`` returns as many records as fit
  a frame, ``cmd_clear_tag_buffer`` empties the buffer. Other commands get an empty OK.
* ``chafon18`` / ``chafon288``: polled. Each inventory command is answered with the tags
  read since the previous poll (at most ``POLL_LOOKBACK_S``), ``tags_per_frame`` to a
  frame, status 0x03 "more frames follow" on all frames but the last (0x01). A 288
  inventory names one antenna (an antenna the gate lacks gets status 0xF8); UHFReader18
  reports no antenna and no RSSI. With ``GateSpec.autonomous`` the reader also pushes
  every read as a 0xEE frame, with a heartbeat every ``keepalive_s``.
* ``ascii``: one ``EPC,ANTENNA,RSSI`` line per read, CRLF; commands are ignored.

Line noise (:class:`LineNoise`): before a frame, a burst of random bytes; in a frame,
one byte altered, so its CRC fails (ASCII has no CRC: the byte gets its top bit set, so
the line is not ASCII; ASCII garbage is a line of non-ASCII bytes, so it cannot merge
with the next line). Either way the host drops it and reads the next good frame.

Timestamps: the frames carry no absolute time (Mercury's TIMESTAMP metadata is ms since
the last keep-alive, or since the start of a batch inventory); the host stamps reads on
receipt. Carry times are seconds since :meth:`GateSim.start` (``GateSim.t0_us`` is that
instant in epoch microseconds).

Unplug: :meth:`SimGate.unplug` opens a new pty pair, re-points the symlink atomically
(``os.symlink`` to a temporary name, then ``os.replace``, as socat's ``link=`` does) and
closes the old pair: a host holding the old port gets EOF (pyserial raises
``SerialException``) and reopening the same path works at once. The reader comes back
powered off: a Mercury host must start continuous reading again.

Threads: one per gate (named ``gate-sim-<gate_id>``), waking every ``TICK_S`` or when the
host writes. Master writes never block: when no host reads, the pty fills (about 18 KB)
and its backlog is discarded, as bytes sent down an unplugged serial line are lost
(``GateStats.backlog_flushes``); pyserial flushes stale input when it opens a port anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import termios
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from devices.epc import encode_sgtin96, encode_sscc96
from devices.errors import DecodeError
from devices.records import TagRead
from devices.rfid import ascii, chafon, mercury

log = logging.getLogger(__name__)

Direction = Literal["out", "in", "parked"]

DEFAULT_LINK_DIR = Path("var/sim/gates")
PROTOCOLS = ("mercury", "chafon18", "chafon288", "ascii")
TICK_S = 0.01
POLL_LOOKBACK_S = 0.5  # a polled inventory reports reads of at most this long ago
PARCEL_COOLDOWN_S = 60.0  # a parcel carried through a door is not carried again sooner
VAN_SHARE = 0.1  # share of planned events that are a van parking at a dock (with van_epcs)
RSSI_DBM = (-70, -45)  # edge of the field .. strongest peak, Mercury's signed dBm
CHAFON_RSSI = (0x40, 0x6C)  # Chafon's unsigned vendor byte over the same range
FCC_CHANNELS_KHZ = 902_750 + 500 * np.arange(50)
_ANTENNAS = {"mercury": (1, 15), "chafon18": (1, 8), "chafon288": (1, 8), "ascii": (0, 255)}
_GATE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # also a safe file name
_CHAFON_ADR = 0x00
_CHAFON_INFO = {  # get-reader-info data: version, type, protocols, bands, power, scan time
    "chafon18": bytes.fromhex("0316 09 02 4E 00 1E 0A"),
    "chafon288": bytes.fromhex("0016 0C 03 4E 00 1E 0A 01 000000"),  # wabson test_base.py
}


@dataclass(frozen=True, slots=True)
class GateSpec:
    """One gate as the manifest gives it. ``antennas`` maps antenna number to role
    (``"hall"`` or ``"dock"``); ``autonomous`` (Chafon only) adds 0xEE output."""

    gate_id: str
    protocol: str
    antennas: Mapping[int, str] = field(default_factory=lambda: {1: "hall", 2: "dock"})
    autonomous: bool = False
    dock_stop_id: str | None = None
    baud: int = 115200

    def __post_init__(self) -> None:
        if not _GATE_ID.fullmatch(self.gate_id):
            raise ValueError(f"gate_id must match {_GATE_ID.pattern}, got {self.gate_id!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        lo, hi = _ANTENNAS[self.protocol]
        if not self.antennas:
            raise ValueError(f"gate {self.gate_id} has no antennas")
        for ant, role in self.antennas.items():
            if isinstance(ant, bool) or not isinstance(ant, int) or not lo <= ant <= hi:
                raise ValueError(f"{self.protocol} antennas are {lo}..{hi}, got {ant!r}")
            if role not in ("hall", "dock"):
                raise ValueError(f"antenna role must be 'hall' or 'dock', got {role!r}")
        if self.autonomous and not self.protocol.startswith("chafon"):
            raise ValueError("autonomous output is a Chafon mode")

    def role(self, role: str) -> tuple[int, ...]:
        """The antennas facing ``role``; those of the other role if the gate has none."""
        ants = tuple(sorted(a for a, r in self.antennas.items() if r == role))
        return ants or tuple(sorted(self.antennas))

    @classmethod
    def from_manifest(cls, gate: Mapping[str, Any]) -> GateSpec:
        """From a manifest ``gates`` entry (antenna keys are strings there)."""
        antennas = {int(k): str(v) for k, v in gate.get("antennas", {"1": "hall"}).items()}
        return cls(str(gate["gate_id"]), str(gate["protocol"]), antennas,
                   dock_stop_id=gate.get("dock_stop_id"), baud=int(gate.get("baud", 115200)))

    def manifest_entry(self, url: str | os.PathLike[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"gate_id": self.gate_id}
        if self.dock_stop_id is not None:
            entry["dock_stop_id"] = self.dock_stop_id
        return entry | {"url": os.fspath(url), "protocol": self.protocol, "baud": self.baud,
                        "antennas": {str(a): r for a, r in sorted(self.antennas.items())}}


@dataclass(slots=True)
class Carry:
    """Ground truth: ``epc_hex`` crossed ``gate_id`` from ``t_start_s`` to ``t_end_s``
    (seconds since the simulator started). ``reads_written`` counts the reads the gate
    wrote in intact frames (what a host decodes); ``corrupted_frames`` the frames holding
    this EPC that went out with a byte altered."""

    gate_id: str
    epc_hex: str
    direction: Direction
    t_start_s: float
    t_end_s: float
    reads_written: int = 0
    corrupted_frames: int = 0


@dataclass(frozen=True, slots=True)
class PlannedCarry:
    """A carry and its reads: time (s), antenna and RSSI (whole dBm), sorted by time."""

    carry: Carry
    t_s: NDArray[np.float64]
    antenna: NDArray[np.int64]
    rssi_dbm: NDArray[np.int64]


def parcel_epcs(rng: np.random.Generator, n: int, company_prefix: str = "0614141") -> list[str]:
    """``n`` distinct parcel EPCs: about 70 % SSCC-96 (filter 2, full case for transport),
    the rest SGTIN-96 (filter 1, point of sale item)."""
    serials = rng.choice(10**9, size=n, replace=False)
    sscc = rng.random(n) < 0.7
    items = rng.integers(0, 10**5, size=n)
    return [encode_sscc96(company_prefix, f"0{s:09d}", 2) if is_sscc
            else encode_sgtin96(company_prefix, f"1{i:05d}", int(s), 1)
            for s, is_sscc, i in zip(serials.tolist(), sscc.tolist(), items.tolist(), strict=True)]


class CarryPlanner:
    """The seeded stream of carries through all gates, planned lazily in time order, so
    the same seed gives the same carries whoever asks and when. Thread-safe.

    Carries start ``first_s`` in, then at exponential gaps averaging ``carries_per_min``
    per gate, until ``until_s`` (None: for ever). A carry picks a gate uniformly, goes
    ``"out"`` four times in five (a parcel in the hub onto a van) or ``"in"`` (a parcel
    back from a van; a fifth of the parcels start out on vans), never with a parcel that
    is mid-carry or was carried in the last ``PARCEL_COOLDOWN_S``.
    """

    def __init__(
        self, gates: Sequence[GateSpec], seed: int, *, epcs: Sequence[str] | None = None,
        van_epcs: Sequence[str] = (), carries_per_min: float = 6.0,
        carry_s: tuple[float, float] = (1.5, 3.0), read_rate_hz: tuple[float, float] = (10.0, 40.0),
        first_s: float = 0.5, until_s: float | None = None,
    ) -> None:  # fmt: skip
        ids = [g.gate_id for g in gates]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"need at least one gate and distinct gate ids, got {ids}")
        if carries_per_min <= 0 or not 0 < carry_s[0] <= carry_s[1]:
            raise ValueError("carries_per_min and carry_s must be positive")
        self._gates = list(gates)
        self._rng = np.random.default_rng(seed)
        self.epcs = [e.upper() for e in epcs] if epcs is not None else parcel_epcs(self._rng, 200)
        self.van_epcs = [e.upper() for e in van_epcs]
        self._out = self._rng.random(len(self.epcs)) < 0.2
        self._free_s = np.zeros(len(self.epcs))
        self._van_free_s = np.zeros(len(self.van_epcs))
        self._gap_s = 60.0 / (carries_per_min * len(ids))
        self._carry_s, self._rate_hz = carry_s, read_rate_hz
        self._next_s, self._until_s = first_s, until_s
        self._lock = threading.Lock()
        self._all: list[PlannedCarry] = []
        self._by_gate: dict[str, list[PlannedCarry]] = {i: [] for i in ids}

    def plan_until(self, t_s: float) -> None:
        """Plan every carry that starts at or before ``t_s``."""
        with self._lock:
            while self._next_s <= t_s and (self._until_s is None or self._next_s < self._until_s):
                planned = self._plan_at(self._next_s)
                if planned is not None:
                    self._all.append(planned)
                    self._by_gate[planned.carry.gate_id].append(planned)
                self._next_s += float(self._rng.exponential(self._gap_s))

    def carries_for(self, gate_id: str, start: int = 0) -> list[PlannedCarry]:
        """The carries planned so far through ``gate_id``, from the ``start``-th on."""
        with self._lock:
            return self._by_gate[gate_id][start:]

    def planned(self) -> list[PlannedCarry]:
        with self._lock:
            return list(self._all)

    def _plan_at(self, t: float) -> PlannedCarry | None:
        rng = self._rng
        gate = self._gates[int(rng.integers(len(self._gates)))]
        if self.van_epcs and rng.random() < VAN_SHARE:
            vans = np.flatnonzero(self._van_free_s <= t)
            if vans.size:
                v = int(rng.choice(vans))
                planned = self._parked(gate, self.van_epcs[v], t)
                self._van_free_s[v] = planned.carry.t_end_s + 30.0
                return planned
        out = bool(rng.random() < 0.8)
        free = self._free_s <= t
        candidates = np.flatnonzero(free & (self._out != out))
        if not candidates.size:
            out = not out
            candidates = np.flatnonzero(free & (self._out != out))
            if not candidates.size:
                return None
        i = int(rng.choice(candidates))
        duration = float(rng.uniform(*self._carry_s))
        self._out[i] = out
        self._free_s[i] = t + duration + PARCEL_COOLDOWN_S
        return plan_carry(rng, gate, self.epcs[i], "out" if out else "in", t, duration,
                          float(rng.uniform(*self._rate_hz)))  # fmt: skip

    def _parked(self, gate: GateSpec, epc: str, t: float) -> PlannedCarry:
        return plan_parked(self._rng, gate, epc, t, float(self._rng.uniform(20.0, 60.0)))


def plan_carry(rng: np.random.Generator, gate: GateSpec, epc: str, direction: Direction,
               t: float, duration: float, rate_hz: float) -> PlannedCarry:  # fmt: skip
    """One parcel carried through ``gate`` from ``t`` for ``duration`` seconds, read
    ``rate_hz`` times a second: the first side's antennas early, the other side's late."""
    out = direction == "out"
    first, second = (gate.role("hall"), gate.role("dock"))[:: 1 if out else -1]
    n = max(3, int(rng.poisson(rate_hz * duration)))
    t_s = t + np.sort(rng.uniform(0.0, duration, n))
    p = (t_s - t) / duration  # how far through the door, 0..1
    on_first = rng.random(n) < 1.0 / (1.0 + np.exp((p - 0.5) / 0.08))
    antenna = np.where(on_first, np.asarray(first)[rng.integers(len(first), size=n)],
                       np.asarray(second)[rng.integers(len(second), size=n)])
    peak = rng.uniform(RSSI_DBM[1] - 7, RSSI_DBM[1])
    rssi = RSSI_DBM[0] + (peak - RSSI_DBM[0]) * np.sin(np.pi * p) + rng.normal(0.0, 1.5, n)
    carry = Carry(gate.gate_id, epc, direction, t, t + duration)
    return PlannedCarry(carry, t_s, antenna.astype(np.int64),
                        np.clip(np.rint(rssi), *RSSI_DBM).astype(np.int64))


def plan_parked(rng: np.random.Generator, gate: GateSpec, epc: str, t: float,
                duration: float, rate_hz: tuple[float, float] = (2.0, 5.0)) -> PlannedCarry:
    """A van backed up to the dock: its tag read slowly on the dock antennas."""
    n = max(3, int(rng.poisson(rng.uniform(*rate_hz) * duration)))
    t_s = t + np.sort(rng.uniform(0.0, duration, n))
    dock = np.asarray(gate.role("dock"))
    rssi = np.clip(np.rint(rng.normal(-60.0, 2.0, n)), *RSSI_DBM).astype(np.int64)
    antenna = dock[rng.integers(dock.size, size=n)].astype(np.int64)
    return PlannedCarry(Carry(gate.gate_id, epc, "parked", t, t + duration), t_s, antenna, rssi)


class FixedPlanner:
    """A planner over carries given in advance (a scripted day), for :class:`GateSim`."""

    def __init__(self, carries: Sequence[PlannedCarry]) -> None:
        ordered = sorted(carries, key=lambda c: c.carry.t_start_s)
        self._all = ordered
        self._by_gate: dict[str, list[PlannedCarry]] = {}
        for c in ordered:
            self._by_gate.setdefault(c.carry.gate_id, []).append(c)

    def plan_until(self, t_s: float) -> None:
        """Everything is planned already."""

    def carries_for(self, gate_id: str, start: int = 0) -> list[PlannedCarry]:
        return self._by_gate.get(gate_id, [])[start:]

    def planned(self) -> list[PlannedCarry]:
        return list(self._all)


def chafon_rssi(rssi_dbm: int) -> int:
    """dBm -> Chafon's vendor byte, RSSI_DBM mapped linearly onto CHAFON_RSSI."""
    lo, hi = CHAFON_RSSI
    scaled = lo + (rssi_dbm - RSSI_DBM[0]) * (hi - lo) / (RSSI_DBM[1] - RSSI_DBM[0])
    return int(min(hi, max(lo, round(scaled))))


# ------------------------------------------------------------------ readers


class _Read(NamedTuple):
    t_s: float
    antenna: int
    rssi_dbm: int
    carry: Carry


class _Out(NamedTuple):
    frame: bytes
    reads: tuple[Carry, ...]  # one entry per TagRead the frame holds


class _Schedule:
    """One gate's view of the planner: the reads due in a time window."""

    def __init__(self, planner: CarryPlanner | FixedPlanner, gate_id: str) -> None:
        self._planner, self._gate_id = planner, gate_id
        self._taken = 0
        self._active: list[PlannedCarry] = []

    def reads(self, after_s: float, until_s: float, antenna: int | None = None) -> list[_Read]:
        """Reads with ``after_s < t <= until_s`` (on ``antenna`` only, if given), by time."""
        self._planner.plan_until(until_s)
        new = self._planner.carries_for(self._gate_id, self._taken)
        self._taken += len(new)
        self._active = [p for p in self._active + new if p.carry.t_end_s > after_s - 10.0]
        out: list[_Read] = []
        for p in self._active:
            i0, i1 = np.searchsorted(p.t_s, [after_s, until_s], side="right").tolist()
            for t, a, r in zip(p.t_s[i0:i1].tolist(), p.antenna[i0:i1].tolist(),
                               p.rssi_dbm[i0:i1].tolist(), strict=True):  # fmt: skip
                if antenna is None or a == antenna:
                    out.append(_Read(t, a, r, p.carry))
        out.sort(key=lambda r: r.t_s)
        return out


class _Reader:
    """A reader's behaviour: frames for the host's commands and for the passing time."""

    def __init__(self, spec: GateSpec, schedule: _Schedule, rng: np.random.Generator,
                 keepalive_s: float, tags_per_frame: int) -> None:  # fmt: skip
        self.spec, self.schedule, self.rng = spec, schedule, rng
        self.keepalive_s, self.tags_per_frame = keepalive_s, tags_per_frame

    def reset(self, now: float) -> None:
        """Power on (at start and after an unplug)."""

    def on_bytes(self, data: bytes, now: float) -> list[_Out]:
        return []

    def tick(self, now: float) -> list[_Out]:
        return []


class _Mercury(_Reader):
    def reset(self, now: float) -> None:
        self._framer = mercury.Framer(commands=True)
        self._streaming = False
        self._meta, self._search = mercury.META_STREAMING, mercury.SEARCH_CONTINUOUS
        self._cursor = self._base = now
        self._keepalive_at = now + self.keepalive_s
        self._inventory: tuple[float, float, int] | None = None  # from, until, search flags
        self._buffer: list[tuple[TagRead, Carry]] = []
        self._sent = 0  # get-tag-buffer read pointer

    def on_bytes(self, data: bytes, now: float) -> list[_Out]:
        out: list[_Out] = []
        for frame in self._framer.feed(data):
            with contextlib.suppress(DecodeError):
                out += self._command(*mercury.decode_command(frame), now)
        return out

    def _command(self, op: int, data: bytes, now: float) -> list[_Out]:
        if op == mercury.OP_MULTI_PROTOCOL and data[2:3] == b"\x01":  # start continuous
            if len(data) >= 16 and data[8] == mercury.OP_READ_TAG_MULTIPLE and data[9] & 0x10:
                self._search = int.from_bytes(data[10:12])
                self._meta = int.from_bytes(data[14:16]) & mercury.META_ALL
            self._streaming, self._cursor, self._base = True, now, now
            self._keepalive_at = now + self.keepalive_s
            return [_Out(mercury.encode_frame(op, data[:3]), ())]
        if op == mercury.OP_MULTI_PROTOCOL and data[2:3] == b"\x02":
            self._streaming = False
            return [_Out(mercury.encode_stop_response(), ())]
        if op == mercury.OP_READ_TAG_MULTIPLE and len(data) >= 5:
            timeout_s = int.from_bytes(data[3:5]) / 1000
            self._inventory = (now, now + timeout_s, int.from_bytes(data[1:3]))
            return []  # the reply comes when the inventory is over
        if op == mercury.OP_GET_TAG_BUFFER:
            meta = int.from_bytes(data[0:2]) & mercury.META_ALL if len(data) >= 2 else self._meta
            return [self._buffer_reply(meta)]
        if op == mercury.OP_CLEAR_TAG_BUFFER:
            self._buffer.clear()
            self._sent = 0
        return [_Out(mercury.encode_frame(op), ())]  # settings and the rest: OK, no data

    def _read(self, r: _Read, count: int, base_s: float) -> TagRead:
        freq = int(FCC_CHANNELS_KHZ[self.rng.integers(FCC_CHANNELS_KHZ.size)])
        return TagRead(r.carry.epc_hex, r.antenna, float(r.rssi_dbm), True, count,
                       round((r.t_s - base_s) * 1000), freq, int(self.rng.integers(0, 181)))

    def _buffer_reply(self, meta: int) -> _Out:
        rest = self._buffer[self._sent :]
        if not rest:
            return _Out(mercury.encode_frame(mercury.OP_GET_TAG_BUFFER, b"", 0x0600), ())
        chunk: list[tuple[TagRead, Carry]] = []
        size = 4  # flags, read options, count
        for read, carry in rest:
            size += len(mercury.encode_tag_buffer_response([read], meta)) - 11
            if size > mercury.MAX_LEN and chunk:
                break
            chunk.append((read, carry))
        self._sent += len(chunk)
        frame = mercury.encode_tag_buffer_response([r for r, _ in chunk], meta)
        return _Out(frame, tuple(c for _, c in chunk))

    def tick(self, now: float) -> list[_Out]:
        out: list[_Out] = []
        if self._streaming:
            for r in self.schedule.reads(self._cursor, now):
                frame = mercury.encode_tag_record_frame(self._read(r, 1, self._base), self._meta,
                                                        search_flags=self._search)  # fmt: skip
                out.append(_Out(frame, (r.carry,)))
            self._cursor = now
            if now >= self._keepalive_at:
                out.append(_Out(mercury.encode_keepalive(), ()))
                self._base = now
                self._keepalive_at = max(self._keepalive_at + self.keepalive_s, now)
        if self._inventory is not None and now >= self._inventory[1]:
            t0, t1, search = self._inventory
            self._inventory = None
            found: dict[tuple[str, int], list[_Read]] = {}
            for r in self.schedule.reads(t0, t1):
                found.setdefault((r.carry.epc_hex, r.antenna), []).append(r)
            limit = 255 if not search & mercury.SEARCH_LARGE_POPULATION else 10**6
            records = list(found.values())[:limit]
            for reads in records:  # one record per tag and antenna: its strongest read
                best = max(reads, key=lambda r: r.rssi_dbm)
                self._buffer.append((self._read(best, min(len(reads), 255), t0), best.carry))
            reply = (mercury.encode_read_tag_multiple_response(len(records), search_flags=search)
                     if records else mercury.encode_frame(mercury.OP_READ_TAG_MULTIPLE, b"",
                                                          mercury.STATUS_NO_TAGS))  # fmt: skip
            out.append(_Out(reply, ()))
        return out


class _Chafon(_Reader):
    def reset(self, now: float) -> None:
        self._framer = chafon.Framer()
        self._polled: dict[int, float] = {}  # antenna (0: UHFReader18) -> last inventory
        self._cursor = now
        self._heartbeat_at = now + self.keepalive_s
        self._packets = self._pushed = 0

    def on_bytes(self, data: bytes, now: float) -> list[_Out]:
        out: list[_Out] = []
        for frame in self._framer.feed(data):
            try:
                adr, cmd, body = chafon.decode_command(frame)
            except DecodeError:
                continue
            if adr not in (0xFF, _CHAFON_ADR):
                continue
            if cmd == chafon.CMD_INVENTORY:
                out += self._inventory(body, now)
            else:
                info = _CHAFON_INFO[self.spec.protocol] if cmd == chafon.CMD_READER_INFO else b""
                reply = chafon.encode_response(cmd, chafon.STATUS_OK, info, _CHAFON_ADR)
                out.append(_Out(reply, ()))
        return out

    def _inventory(self, body: bytes, now: float) -> list[_Out]:
        is288 = self.spec.protocol == "chafon288"
        if not is288:
            antennas = [0]
        elif len(body) >= 3 and body[-2] >= 0x80:  # Ant: 0x80 + n is antenna n + 1
            antennas = [body[-2] - 0x80 + 1]
            if antennas[0] not in self.spec.antennas:
                status = chafon.STATUS_ANTENNA_ERROR
                return [_Out(chafon.encode_response(chafon.CMD_INVENTORY, status), ())]
        else:
            antennas = sorted(self.spec.antennas)
        chunks: list[tuple[int, list[tuple[str, int, Carry]]]] = []
        for ant in antennas:
            since = max(self._polled.get(ant, -1e9), now - POLL_LOOKBACK_S)
            self._polled[ant] = now
            strongest: dict[str, tuple[int, Carry]] = {}
            for r in self.schedule.reads(since, now, ant if is288 else None):
                if r.carry.epc_hex not in strongest or r.rssi_dbm > strongest[r.carry.epc_hex][0]:
                    strongest[r.carry.epc_hex] = (r.rssi_dbm, r.carry)
            tags = [(epc, chafon_rssi(dbm), c) for epc, (dbm, c) in strongest.items()]
            chunks += [(ant, tags[i : i + self.tags_per_frame])
                       for i in range(0, len(tags), self.tags_per_frame)]
        if not chunks:
            chunks = [(antennas[0], [])]
        out: list[_Out] = []
        for k, (ant, tags) in enumerate(chunks):
            status = chafon.STATUS_DONE if k == len(chunks) - 1 else chafon.STATUS_MORE
            if is288:
                reads = [TagRead(epc, ant, float(raw)) for epc, raw, _ in tags]
                frame = chafon.encode_inventory_response288(reads, status, _CHAFON_ADR, ant)
            else:
                frame = chafon.encode_inventory_response18([e for e, _, _ in tags], status)
            out.append(_Out(frame, tuple(c for _, _, c in tags)))
        return out

    def tick(self, now: float) -> list[_Out]:
        if not self.spec.autonomous:
            return []
        out: list[_Out] = []
        for r in self.schedule.reads(self._cursor, now):
            epc = r.carry.epc_hex
            if self.spec.protocol == "chafon288":
                raw = float(chafon_rssi(r.rssi_dbm))
                frame = chafon.encode_autonomous288(TagRead(epc, r.antenna, raw))
            else:
                frame = chafon.encode_autonomous18(epc)
            out.append(_Out(frame, (r.carry,)))
            self._pushed += 1
        self._cursor = now
        if now >= self._heartbeat_at:
            self._packets += 1
            out.append(_Out(chafon.encode_heartbeat(self._packets, self._pushed), ()))
            self._heartbeat_at = max(self._heartbeat_at + self.keepalive_s, now)
        return out


class _Ascii(_Reader):
    def reset(self, now: float) -> None:
        self._cursor = now

    def tick(self, now: float) -> list[_Out]:
        out: list[_Out] = []
        for r in self.schedule.reads(self._cursor, now):
            read = TagRead(r.carry.epc_hex, r.antenna, float(r.rssi_dbm), True)
            out.append(_Out(ascii.encode_line(read), (r.carry,)))
        self._cursor = now
        return out


_READERS: dict[str, type[_Reader]] = {
    "mercury": _Mercury, "chafon18": _Chafon, "chafon288": _Chafon, "ascii": _Ascii,
}


# ------------------------------------------------------------------ gates


@dataclass(frozen=True, slots=True)
class LineNoise:
    """Per frame written: ``garbage_prob`` of a burst of 1..``garbage_max`` random bytes
    before it, ``corrupt_prob`` of one of its bytes altered."""

    corrupt_prob: float = 0.002
    garbage_prob: float = 0.002
    garbage_max: int = 32


@dataclass(slots=True)
class GateStats:
    frames_written: int = 0  # corrupted ones included
    frames_corrupted: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0
    host_bytes: int = 0  # command bytes received from the host
    backlog_flushes: int = 0  # the pty was full (no host reading) and its backlog dropped
    unplugs: int = 0


class SimGate:
    """One simulated reader behind a pty pair and a stable symlink ``path``.
    Created and driven by :class:`GateSim`; :meth:`unplug` may be called from any thread."""

    def __init__(
        self, spec: GateSpec, planner: CarryPlanner | FixedPlanner, path: Path, *,
        rng: np.random.Generator,
        noise: LineNoise, clock: Callable[[], float], keepalive_s: float, tags_per_frame: int,
        unplug_every_s: float | None,
    ) -> None:  # fmt: skip
        self.spec, self.path, self.stats = spec, path, GateStats()
        self.device = ""  # the slave's /dev/pts/N while open
        self._rng, self._noise, self._clock = rng, noise, clock
        self._unplug_every_s = unplug_every_s
        self._reader = _READERS[spec.protocol](
            spec, _Schedule(planner, spec.gate_id), rng, keepalive_s, tags_per_frame)
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unplug_asked = threading.Event()
        self._unplug_done = threading.Event()
        self._warned_backlog = False
        self.error: BaseException | None = None

    def open(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        self._plug()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"gate-sim-{self.spec.gate_id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"s")
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Close the pty pair and remove the symlink (if it is still ours)."""
        with contextlib.suppress(OSError):
            if os.readlink(self.path) == self.device:
                self.path.unlink()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self.device = ""

    def unplug(self) -> None:
        """Pull the cable and plug it back in: a new pty pair behind the same path; a host
        holding the old one gets EOF. Returns when the new port is in place."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self._plug()
            return
        self._unplug_done.clear()
        self._unplug_asked.set()
        os.write(self._wake_w, b"u")
        if not self._unplug_done.wait(5.0):
            raise TimeoutError(f"gate {self.spec.gate_id} did not unplug")

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        device = os.ttyname(slave)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(device, tmp)
        os.replace(tmp, self.path)  # atomic: the path always names a live port
        old = (self._master, self._slave)
        self._master, self._slave, self.device = master, slave, device
        if old[0] >= 0:
            os.close(old[0])
            os.close(old[1])
            self.stats.unplugs += 1
        self._reader.reset(self._clock())
        log.info("gate %s (%s): %s -> %s", self.spec.gate_id, self.spec.protocol, self.path, device)

    def _run(self) -> None:
        try:
            every = self._unplug_every_s
            next_unplug = self._clock() + every if every else None
            while not self._stop.is_set():
                ready, _, _ = select.select([self._master, self._wake_r], [], [], TICK_S)
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                now = self._clock()
                due = next_unplug is not None and now >= next_unplug
                if self._unplug_asked.is_set() or due:
                    if due and every:
                        next_unplug = now + every
                    self._unplug_asked.clear()
                    self._plug()
                    self._unplug_done.set()
                    continue
                outs: list[_Out] = []
                if self._master in ready:
                    with contextlib.suppress(BlockingIOError):
                        data = os.read(self._master, 4096)
                        self.stats.host_bytes += len(data)
                        outs += self._reader.on_bytes(data, now)
                outs += self._reader.tick(now)
                for out in outs:
                    self._emit(out)
        except BaseException as exc:  # surfaced by GateSim.stop()
            self.error = exc
            log.exception("gate %s simulator failed", self.spec.gate_id)

    def _emit(self, out: _Out) -> None:
        rng, noise, stats = self._rng, self._noise, self.stats
        if rng.random() < noise.garbage_prob:
            n = int(rng.integers(1, noise.garbage_max + 1))
            if self.spec.protocol == "ascii":  # a line of non-ASCII noise
                junk = rng.integers(0x80, 0x100, size=n, dtype=np.uint8).tobytes() + b"\r\n"
            else:
                junk = rng.integers(0, 0x100, size=n, dtype=np.uint8).tobytes()
            self._write(junk)
            stats.garbage_bursts += 1
            stats.garbage_bytes += len(junk)
        frame = out.frame
        corrupt = bool(rng.random() < noise.corrupt_prob)
        if corrupt:
            buf = bytearray(frame)
            if self.spec.protocol == "ascii":  # not the terminator: the line stays a line
                buf[int(rng.integers(len(frame.rstrip(b"\r\n"))))] ^= 0x80
            else:
                buf[int(rng.integers(len(buf)))] ^= int(rng.integers(1, 0x100))
            frame = bytes(buf)
            stats.frames_corrupted += 1
            for carry in {id(c): c for c in out.reads}.values():
                carry.corrupted_frames += 1
        else:
            for carry in out.reads:
                carry.reads_written += 1
        self._write(frame)
        stats.frames_written += 1

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        if n == len(data):
            return
        # the pty is full: no host is reading. Bytes sent down an unconnected line are
        # lost, so drop the backlog (and a partly written frame) and send this frame whole.
        termios.tcflush(self._slave, termios.TCIFLUSH)
        self.stats.backlog_flushes += 1
        if not self._warned_backlog:
            log.info("gate %s: no host is reading %s; dropping its backlog", self.spec.gate_id,
                     self.path)  # fmt: skip
            self._warned_backlog = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._master, data)


class GateSim:
    """Simulated gates for ``gates``, all fed by one seeded :class:`CarryPlanner`.

    ``start()`` creates ``link_dir/<gate_id>`` for each gate and starts a thread per gate;
    ``stop()`` joins them, closes the ptys, removes the links and re-raises the first
    error a gate thread hit. Also a context manager, and ``await run(duration_s)``.
    Planner options: ``epcs`` (default: 200 from :func:`parcel_epcs`), ``van_epcs``,
    ``carries_per_min`` (per gate), ``carry_s``, ``read_rate_hz``, ``first_carry_s``,
    ``carry_until_s`` (no carry starts after it; None: for ever); or ``carries``, a
    scripted list (a simulated day's loading, :mod:`simulators.day`) instead of a planner.
    """

    def __init__(
        self, gates: Sequence[GateSpec], seed: int, *,
        link_dir: str | os.PathLike[str] = DEFAULT_LINK_DIR,
        epcs: Sequence[str] | None = None, van_epcs: Sequence[str] = (),
        carries_per_min: float = 6.0, carry_s: tuple[float, float] = (1.5, 3.0),
        read_rate_hz: tuple[float, float] = (10.0, 40.0), first_carry_s: float = 0.5,
        carry_until_s: float | None = None, noise: LineNoise = LineNoise(),
        unplug_every_s: float | None = None, keepalive_s: float = 1.0,
        chafon_tags_per_frame: int = 2, carries: Sequence[PlannedCarry] | None = None,
    ) -> None:  # fmt: skip
        if not 1 <= chafon_tags_per_frame <= 16 or keepalive_s <= 0:
            raise ValueError("chafon_tags_per_frame must be 1..16 and keepalive_s positive")
        self.planner: CarryPlanner | FixedPlanner = CarryPlanner(
            gates, seed, epcs=epcs, van_epcs=van_epcs, carries_per_min=carries_per_min,
            carry_s=carry_s, read_rate_hz=read_rate_hz, first_s=first_carry_s,
            until_s=carry_until_s) if carries is None else FixedPlanner(carries)
        self.link_dir = Path(link_dir).absolute()  # the manifest url works from any cwd
        self._t0 = time.monotonic()
        self.t0_us = 0  # epoch microseconds at start()
        self.gates: dict[str, SimGate] = {
            g.gate_id: SimGate(g, self.planner, self.link_dir / g.gate_id,
                               rng=np.random.default_rng([seed, 1, i]), noise=noise,
                               clock=self.elapsed_s, keepalive_s=keepalive_s,
                               tags_per_frame=chafon_tags_per_frame,
                               unplug_every_s=unplug_every_s)
            for i, g in enumerate(gates)
        }  # fmt: skip
        self._started = self._running = False

    def elapsed_s(self) -> float:
        """Simulator time: seconds since start(), the time base of every Carry."""
        return time.monotonic() - self._t0

    def path(self, gate_id: str) -> Path:
        return self.gates[gate_id].path

    def start(self) -> None:
        if self._started:
            raise RuntimeError("a GateSim starts once (its carries' clock starts with it)")
        self._started = True
        self.link_dir.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self.t0_us = time.time_ns() // 1000
        opened: list[SimGate] = []
        try:
            for gate in self.gates.values():
                gate.open()
                opened.append(gate)
        except BaseException:
            for gate in opened:
                gate.close()
            raise
        for gate in self.gates.values():
            gate.start()
        self._running = True

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for gate in self.gates.values():
            gate.stop()
        for gate in self.gates.values():
            gate.close()
        s = self.stats()
        log.info("gate simulator stopped after %.1f s: %d carries, %d frames (%d corrupted)",
                 self.elapsed_s(), len(self.planner.planned()),
                 sum(x.frames_written for x in s.values()),
                 sum(x.frames_corrupted for x in s.values()))  # fmt: skip
        errors = [g.error for g in self.gates.values() if g.error is not None]
        if errors:
            raise RuntimeError("a gate simulator thread failed") from errors[0]

    def __enter__(self) -> GateSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def run(self, duration_s: float | None = None) -> None:
        """Run for ``duration_s`` (None: until cancelled) without blocking the event loop."""
        self.start()
        try:
            if duration_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration_s)
        finally:
            await asyncio.to_thread(self.stop)

    def carries(self) -> list[Carry]:
        """A copy of the ground truth so far: every carry that has started, with the reads
        and corrupted frames written for it (final once the carry has ended)."""
        return [replace(p.carry) for p in self.planner.planned()]

    def stats(self) -> dict[str, GateStats]:
        return {gid: replace(g.stats) for gid, g in self.gates.items()}

    def manifest_gates(self) -> list[dict[str, Any]]:
        """The manifest ``gates`` entries, each ``url`` the gate's symlink."""
        return [g.spec.manifest_entry(g.path) for g in self.gates.values()]
