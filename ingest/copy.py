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


def _layout_keys(columns: Sequence[Column], n: int) -> NDArray[np.int64]:
    """One integer per row that is equal for rows of identical byte layout
    (same NULL pattern, same byte length of every text value)."""
    key = np.zeros(n, dtype=np.int64)
    for col in columns:
        null = col.null if col.null is not None else None
        if col.kind == "text":
            label_len = np.array([len(s.encode()) + 1 for s in col.labels], dtype=np.int64)
            part = label_len[np.asarray(col.values, dtype=np.int64)] if n else key
            if null is not None:
                part = np.where(null, 0, part)
            key = key * 1031 + part  # 1031 > any label length we accept + 1
        elif null is not None:
            key = key * 2 + null
    return key


def encode(columns: Sequence[Column]) -> bytes:
    """Encode whole columns (all of one length) as a binary COPY stream.

    Rows are grouped by byte layout; each group is one packed structured array whose
    fields are filled column by column, so the work is a few memory copies per column.
    COPY does not care about row order, so groups are written one after the other.
    """
    if not columns:
        raise ValueError("no columns")
    n = len(columns[0].values)
    if any(len(c.values) != n for c in columns):
        raise ValueError("columns differ in length")
    encoded_labels: list[list[bytes] | None] = []
    for col in columns:
        if col.kind == "text":
            labels = [s.encode() for s in col.labels]
            if any(len(b) > 1024 for b in labels):
                raise ValueError("text values longer than 1024 bytes")
            codes = np.asarray(col.values, dtype=np.int64)
            if n and (codes.min() < 0 or codes.max() >= len(labels)):
                raise ValueError("text codes out of range")
            encoded_labels.append(labels)
        elif col.kind not in _WIRE:
            raise ValueError(f"unknown column kind {col.kind!r}")
        else:
            encoded_labels.append(None)
    keys = _layout_keys(columns, n)
    uniq, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    chunks = [HEADER]
    for g in range(len(uniq)):
        rows = order[bounds[g] : bounds[g + 1]]
        chunks.append(_encode_group(columns, encoded_labels, rows))
    chunks.append(TRAILER)
    return b"".join(chunks)


def _encode_group(
    columns: Sequence[Column], labels: Sequence[list[bytes] | None], rows: NDArray[np.intp]
) -> bytes:
    """Rows that share one byte layout (taken from the first of them)."""
    first = int(rows[0])
    fields: list[tuple[str, str]] = [("n", ">i2")]
    values: dict[str, object] = {"n": len(columns)}
    for k, (col, enc) in enumerate(zip(columns, labels, strict=True)):
        is_null = col.null is not None and bool(col.null[first])
        fields.append((f"l{k}", ">i4"))
        if is_null:
            values[f"l{k}"] = -1
            continue
        if enc is not None:
            codes = np.asarray(col.values, dtype=np.int64)[rows]
            width = len(enc[int(codes[0])])
            values[f"l{k}"] = width
            if width:
                fields.append((f"v{k}", f"S{width}"))
                values[f"v{k}"] = np.array(enc, dtype=f"S{max(width, 1)}")[codes]
        else:
            wire = _WIRE[col.kind]
            v = np.asarray(col.values)[rows]
            if col.kind == "timestamptz":
                v = v.astype(np.int64) - PG_EPOCH_US
            fields.append((f"v{k}", wire.str))
            values[f"l{k}"] = wire.itemsize
            values[f"v{k}"] = v
    out = np.empty(len(rows), dtype=np.dtype(fields))  # packed: no alignment padding
    for name, value in values.items():
        out[name] = value
    return out.tobytes()
