"""PostgreSQL binary COPY, encoded from NumPy columns without a Python loop over rows.

The binary COPY format is a header, then per row an int16 field count and per field an
int32 byte length (-1 for NULL) followed by the value in network byte order, then an
int16 -1 trailer. Fixed-width columns are byte-swapped whole and copied into the output
rows with one strided copy each; text columns are dictionary-encoded (codes into a short
list of distinct strings, e.g. vehicle ids) and gathered the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"  # a field length of -1
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

    Rows are grouped by byte layout; each group is one block of fixed-width rows, filled
    from a template row (field count, lengths, NULL markers) and then column by column,
    each a strided copy of big-endian values: a few memory copies per column. COPY does
    not care about row order, so groups are written one after the other.
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
    chunks: list[bytes | memoryview] = [HEADER]
    keys = _layout_keys(columns, n)
    if n and (keys == keys[0]).all():  # one layout (the usual case): no grouping
        chunks.append(_encode_group(columns, encoded_labels, None, n))
    elif n:
        uniq, inverse = np.unique(keys, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        for g in range(len(uniq)):
            rows = order[bounds[g] : bounds[g + 1]]
            chunks.append(_encode_group(columns, encoded_labels, rows, len(rows)))
    chunks.append(TRAILER)
    return b"".join(chunks)


def _encode_group(
    columns: Sequence[Column], labels: Sequence[list[bytes] | None],
    rows: NDArray[np.intp] | None, n: int,
) -> memoryview:  # fmt: skip
    """``n`` rows that share one byte layout (taken from the first of them): ``rows``
    of the columns, or all of them (None). The rows are filled with a template row
    (field count, lengths, NULL markers), then each column through a strided view of
    its place in every row, converted to network byte order as it is copied."""
    first = 0 if rows is None else int(rows[0])
    template = bytearray(struct.pack(">h", len(columns)))
    fills: list[tuple[int, str, NDArray[Any]]] = []  # (offset in the row, wire type, values)
    for col, enc in zip(columns, labels, strict=True):
        if col.null is not None and bool(col.null[first]):
            template += NULL
            continue
        v = np.asarray(col.values) if rows is None else np.asarray(col.values)[rows]
        if enc is not None:
            codes = v.astype(np.int64, copy=False)
            width = len(enc[int(codes[0])])  # the group's labels are all this long
            template += struct.pack(">i", width)
            if width:
                fills.append((len(template), f"S{width}",
                              np.array(enc, dtype=f"S{width}")[codes]))  # fmt: skip
        else:
            wire = _WIRE[col.kind]
            width = wire.itemsize
            if col.kind == "timestamptz":
                v = v.astype(np.int64) - PG_EPOCH_US
            template += struct.pack(">i", width)
            fills.append((len(template), wire.str, v))
        template += bytes(width)
    row = np.dtype(f"V{len(template)}")
    out = np.empty(n, row)
    out[:] = np.frombuffer(bytes(template), row)[0]
    for offset, wire_type, values in fills:
        place = np.ndarray((n,), wire_type, buffer=out, offset=offset, strides=(row.itemsize,))
        place[:] = values
    return out.view(np.uint8).data
