"""Bounded columnar batches: messages are appended as small arrays and drained whole.

A batch fills until it holds ``max_rows`` rows or ``max_messages`` messages, or its
first message is ``max_ms`` old; then it is drained and written in one transaction.
Ack tokens travel with the rows they acknowledge, so a message is acknowledged to the
broker only after everything it produced has committed.

milepost's GPS JSON is appended parsed, and decoded ``DECODE_FIXES`` fixes at a time
(and the rest when the batch drains), many messages at once, column by column
(:func:`devices.gps.json.decode_parsed`): per message that costs a list append instead
of a small NumPy array (measured: building a one-row array, and concatenating hundreds
of them, cost more than the rest of a one-fix message), and no decode holds the event
loop long (the writer's round trips wait for it). A message that does not decode
becomes a dead letter of the same batch, so it is stored and acknowledged with it, as
if it had failed on receipt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devices.errors import DecodeError
from devices.gps import json as gps_json
from devices.records import GPS_FIX_DTYPE, TAG_READ_DTYPE

log = logging.getLogger(__name__)

# parsed GPS JSON fixes decoded at once: the column decoder's fixed cost is small against
# a thousand fixes, and a thousand take about a millisecond
DECODE_FIXES = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_us: int
    source: str
    payload: bytes
    reason: str


@dataclass(slots=True)
class FixFrame:
    """Columns of GPS fixes: the structured ``fix`` array plus vehicle codes and receipt time."""

    fix: NDArray[Any]  # GPS_FIX_DTYPE
    vehicle: NDArray[np.int32]  # codes into ``vehicles``
    received_us: NDArray[np.int64]
    vehicles: list[str]
    # per fix, how far the device's clock was off (ingest/clocks.py): ``ts_us`` is
    # corrected, the device stamped ``ts_us + clock_us``; None: no fix needed correcting
    clock_us: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.fix)

    def take(self, index: NDArray[np.bool_] | NDArray[np.intp]) -> FixFrame:
        return FixFrame(
            self.fix[index], self.vehicle[index], self.received_us[index], self.vehicles,
            None if self.clock_us is None else self.clock_us[index],
        )

    @staticmethod
    def empty() -> FixFrame:
        return FixFrame(
            np.empty(0, GPS_FIX_DTYPE), np.empty(0, np.int32), np.empty(0, np.int64), []
        )


@dataclass(slots=True)
class ReadFrame:
    """Columns of RFID tag reads: ``read`` (TAG_READ_DTYPE) plus gate and EPC codes."""

    read: NDArray[Any]
    gate: NDArray[np.int32]
    gates: list[str]
    epc: NDArray[np.int32]
    epcs: list[str]

    def __len__(self) -> int:
        return len(self.read)

    @staticmethod
    def empty() -> ReadFrame:
        return ReadFrame(np.empty(0, TAG_READ_DTYPE), np.empty(0, np.int32), [],
                         np.empty(0, np.int32), [])  # fmt: skip


@dataclass(slots=True)
class Drained:
    fixes: FixFrame
    dead: list[DeadLetter]
    tokens: list[Any]
    messages: int
    reads: ReadFrame = field(default_factory=ReadFrame.empty)
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # typed evidence for the parcel stage (cargo changes, proofs, sensor readings, passes)
    evidence: dict[str, list[Any]] = field(default_factory=dict)


def concat_fixes(parts: list[NDArray[Any]]) -> NDArray[Any]:
    """``np.concatenate`` of GPS_FIX_DTYPE arrays, as bytes: NumPy promotes structured
    dtypes field by field in Python on every call (most of the time, for small parts)."""
    if len(parts) == 1:
        return parts[0]
    raw = [np.ascontiguousarray(p, GPS_FIX_DTYPE).view(np.uint8) for p in parts]
    return np.concatenate(raw).view(GPS_FIX_DTYPE)


@dataclass(slots=True)
class _JsonRun:
    """Consecutive GPS JSON messages, parsed, not decoded yet."""

    items: list[list[Any]] = field(default_factory=list)  # per message, its parsed fixes
    message: list[int] = field(default_factory=list)  # its index in the batch's fix messages
    source: list[str] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    max_rows: int
    max_messages: int
    max_ms: float
    # fixes in receipt order: decoded arrays, and runs of parsed GPS JSON
    _parts: list[NDArray[Any] | _JsonRun] = field(default_factory=list)
    _run_fixes: int = 0  # in the last part, when it is a _JsonRun
    # per message with fixes: vehicle code, receipt time, number of fixes (of GPS JSON:
    # parsed, until it is decoded)
    _codes: list[int] = field(default_factory=list)
    _received: list[int] = field(default_factory=list)
    _counts: list[int] = field(default_factory=list)
    _vehicle_code: dict[str, int] = field(default_factory=dict)
    _dead: list[DeadLetter] = field(default_factory=list)
    _tokens: list[Any] = field(default_factory=list)
    _reads: list[NDArray[Any]] = field(default_factory=list)
    _read_gate: list[int] = field(default_factory=list)
    _read_epcs: list[str] = field(default_factory=list)
    _gate_code: dict[str, int] = field(default_factory=dict)
    _table_rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    _evidence: dict[str, list[Any]] = field(default_factory=dict)
    rows: int = 0
    messages: int = 0
    _opened: float = 0.0

    def _touch(self) -> None:
        if self.messages == 0:
            self._opened = time.monotonic()
        self.messages += 1

    def add_fixes(
        self, vehicle_id: str, fixes: NDArray[Any], received_us: int, token: Any = None
    ) -> None:
        """Append one message's fixes (a GPS_FIX_DTYPE array) for one vehicle."""
        self._touch()
        if len(fixes):
            self._parts.append(fixes)
            self._codes.append(self._vehicle_code.setdefault(vehicle_id, len(self._vehicle_code)))
            self._received.append(received_us)
            self._counts.append(len(fixes))
            self.rows += len(fixes)
        if token is not None:
            self._tokens.append(token)

    def add_json(
        self, vehicle_id: str, items: list[Any], received_us: int, source: str, payload: bytes,
        token: Any = None,
    ) -> None:  # fmt: skip
        """Append one GPS JSON message, parsed (:func:`devices.gps.json.parse`), to be
        decoded with others; a malformed one becomes a dead letter from ``source``."""
        self._touch()
        if token is not None:
            self._tokens.append(token)
        if not items:
            return
        parts = self._parts
        run = parts[-1] if parts else None
        if not isinstance(run, _JsonRun):
            run = _JsonRun()
            parts.append(run)
            self._run_fixes = 0
        run.items.append(items)
        run.message.append(len(self._codes))
        run.source.append(source)
        run.payload.append(payload)
        self._codes.append(self._vehicle_code.setdefault(vehicle_id, len(self._vehicle_code)))
        self._received.append(received_us)
        self._counts.append(len(items))
        self.rows += len(items)
        self._run_fixes += len(items)
        if self._run_fixes >= DECODE_FIXES:
            parts[-1] = self._decode(run)

    def add_reads(self, gate_id: str, epcs: list[str], reads: NDArray[Any]) -> None:
        """Append tag reads of one gate: ``reads`` (TAG_READ_DTYPE) and their EPCs."""
        if not len(reads):
            return
        self._touch()
        self._reads.append(reads)
        self._read_gate.append(self._gate_code.setdefault(gate_id, len(self._gate_code)))
        self._read_epcs.extend(epcs)
        self.rows += len(reads)

    def add_row(self, table: str, row: tuple[Any, ...], token: Any = None) -> None:
        """Append one row for a small table (cargo scans, sensor readings)."""
        self._touch()
        self._table_rows.setdefault(table, []).append(row)
        self.rows += 1
        if token is not None:
            self._tokens.append(token)

    def add_evidence(self, kind: str, item: Any, token: Any = None) -> None:
        """Append one item of evidence for the parcel stage (it has no table of its own)."""
        self._touch()
        self._evidence.setdefault(kind, []).append(item)
        self.rows += 1
        if token is not None:
            self._tokens.append(token)

    def add_dead(self, dead: DeadLetter, token: Any = None) -> None:
        self._touch()
        self._dead.append(dead)
        self.rows += 1
        if token is not None:
            self._tokens.append(token)

    def due(self, now: float | None = None) -> bool:
        if self.messages == 0:
            return False
        if self.rows >= self.max_rows or self.messages >= self.max_messages:
            return True
        now = time.monotonic() if now is None else now
        return (now - self._opened) * 1000.0 >= self.max_ms

    def seconds_until_due(self) -> float:
        if self.messages == 0:
            return self.max_ms / 1000.0
        return max(0.0, self.max_ms / 1000.0 - (time.monotonic() - self._opened))

    def drain(self) -> Drained:
        if self._parts:
            arrays = [self._decode(p) if isinstance(p, _JsonRun) else p for p in self._parts]
            counts = np.asarray(self._counts, np.int64)
            frame = FixFrame(
                concat_fixes(arrays),
                np.repeat(np.asarray(self._codes, np.int32), counts),
                np.repeat(np.asarray(self._received, np.int64), counts),
                list(self._vehicle_code),
            )
        else:
            frame = FixFrame.empty()
        out = Drained(
            frame,
            self._dead,
            self._tokens,
            self.messages,
            self._drain_reads(),
            self._table_rows,
            self._evidence,
        )
        self._table_rows, self._evidence = {}, {}
        self._parts, self._codes, self._received, self._counts = [], [], [], []
        self._run_fixes = 0
        self._vehicle_code, self._dead, self._tokens = {}, [], []
        self.rows = self.messages = 0
        return out

    def _decode(self, run: _JsonRun) -> NDArray[Any]:
        """Decode a run of GPS JSON messages; the ones that fail become dead letters."""
        try:
            decoded = gps_json.decode_parsed(run.items)
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError):
            # a decoder bug: message by message, so it costs only the messages it hits
            log.exception("unexpected error decoding %d GPS JSON messages", len(run.items))
            parts: list[NDArray[Any]] = []
            for items, k, source, payload in zip(run.items, run.message, run.source,
                                                 run.payload, strict=True):  # fmt: skip
                try:
                    one = gps_json.decode_parsed([items])
                    error: Exception | None = one.errors.get(0)
                except (ArithmeticError, ValueError, TypeError, KeyError, IndexError) as exc:
                    error = exc
                if error is None:
                    parts.append(one.fixes)
                    continue
                self._counts[k] = 0
                reason = (str(error) if isinstance(error, DecodeError)
                          else f"internal error: {type(error).__name__}: {error}")  # fmt: skip
                self._dead.append(DeadLetter(self._received[k], source, payload, reason))
            return concat_fixes(parts) if parts else np.empty(0, GPS_FIX_DTYPE)
        for i, why in decoded.errors.items():
            k = run.message[i]
            self._counts[k] = 0
            self._dead.append(DeadLetter(self._received[k], run.source[i], run.payload[i],
                                         str(why)))  # fmt: skip
        return decoded.fixes

    def _drain_reads(self) -> ReadFrame:
        if not self._reads:
            return ReadFrame.empty()
        lengths = np.fromiter((len(r) for r in self._reads), np.int64, len(self._reads))
        labels, codes = np.unique(np.asarray(self._read_epcs), return_inverse=True)
        frame = ReadFrame(
            np.concatenate(self._reads),
            np.repeat(np.asarray(self._read_gate, np.int32), lengths),
            list(self._gate_code),
            codes.astype(np.int32),
            labels.tolist(),
        )
        self._reads, self._read_gate, self._read_epcs, self._gate_code = [], [], [], {}
        return frame
