"""PostgreSQL binary COPY, encoded from NumPy columns without a Python loop over rows.

The binary COPY format is a header, then per row an int16 field count and per field an
int32 byte length (-1 for NULL) followed by the value in network byte order, then an
int16 -1 trailer. Fixed-width columns are scattered into the output buffer with fancy
indexing; text columns are dictionary-encoded (codes into a short list of distinct
strings, e.g. vehicle ids) and gathered the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds

# kind -> big-endian dtype of the wire value
_WIRE: dict[str, np.dtype[Any]] = {
    "timestamptz": np.dtype(">i8"),
    "float8": np.dtype(">f8"),
    "int8": np.dtype(">i8"),
    "int4": np.dtype(">i4"),
    "int2": np.dtype(">i2"),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column to encode.

    ``kind`` is a key of the wire table or ``"text"``. For fixed kinds ``values`` holds the
    values (timestamptz as Unix microseconds); for ``"text"`` it holds int codes into
    ``labels``. ``null`` marks NULLs (None: no NULLs).
    """

    kind: str
    values: NDArray[np.generic]
    null: NDArray[np.bool_] | None = None
    labels: Sequence[str] = ()


def float_column(values: NDArray[np.floating], *, nan_is_null: bool = True) -> Column:
    v = np.asarray(values, dtype=np.float64)
    return Column("float8", v, np.isnan(v) if nan_is_null else None)


def int_column(kind: str, values: NDArray[np.integer], *, null_below: int | None = 0) -> Column:
    v = np.asarray(values)
    return Column(kind, v, v < null_below if null_below is not None else None)


def _ragged_positions(
    starts: NDArray[np.int64], lengths: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), vectorized."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    run_starts = np.cumsum(lengths) - lengths
    within = np.arange(total, dtype=np.int64) - np.repeat(run_starts, lengths)
    return np.repeat(starts, lengths) + within


def encode(columns: Sequence[Column]) -> bytes:
    """Encode whole columns (all of one length) as a binary COPY stream."""
    if not columns:
        raise ValueError("no columns")
    n = len(columns[0].values)
    if any(len(c.values) != n for c in columns):
        raise ValueError("columns differ in length")
    widths = np.full(n, 2, dtype=np.int64)  # int16 field count
    sizes: list[NDArray[np.int64]] = []
    nulls: list[NDArray[np.bool_]] = []
    for col in columns:
        null = col.null if col.null is not None else np.zeros(n, dtype=bool)
        if col.kind == "text":
            label_len = np.array([len(s.encode()) for s in col.labels], dtype=np.int64)
            codes = np.asarray(col.values, dtype=np.int64)
            if n and (codes.min() < 0 or codes.max() >= len(label_len)):
                raise ValueError("text codes out of range")
            size = np.where(null, 0, label_len[codes] if n else 0).astype(np.int64)
        else:
            size = np.where(null, 0, _WIRE[col.kind].itemsize).astype(np.int64)
        sizes.append(size)
        nulls.append(null)
        widths += 4 + size
    row_start = len(HEADER) + np.cumsum(widths) - widths
    total = len(HEADER) + int(widths.sum()) + len(TRAILER)
    out = np.empty(total, dtype=np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    out[total - 2 :] = 0xFF
    nfields = np.frombuffer(np.array(len(columns), dtype=">i2").tobytes(), dtype=np.uint8)
    out[row_start[:, None] + np.arange(2)] = nfields
    pos = row_start + 2
    for col, size, null in zip(columns, sizes, nulls, strict=True):
        prefix = np.where(null, -1, size).astype(">i4").view(np.uint8).reshape(n, 4)
        out[pos[:, None] + np.arange(4)] = prefix
        keep = ~null
        if col.kind == "text":
            encoded = [s.encode() for s in col.labels]
            flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            label_len = np.array([len(b) for b in encoded], dtype=np.int64)
            label_start = np.cumsum(label_len) - label_len
            codes = np.asarray(col.values, dtype=np.int64)[keep]
            dst = _ragged_positions(pos[keep] + 4, size[keep])
            src = _ragged_positions(label_start[codes], size[keep])
            out[dst] = flat[src]
        else:
            wire = _WIRE[col.kind]
            values = np.asarray(col.values)[keep]
            if col.kind == "timestamptz":
                values = values.astype(np.int64) - PG_EPOCH_US
            data = values.astype(wire).view(np.uint8).reshape(-1, wire.itemsize)
            out[pos[keep][:, None] + 4 + np.arange(wire.itemsize)] = data
        pos = pos + 4 + size
    return out.tobytes()
