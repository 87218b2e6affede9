"""The NumPy binary COPY encoder against a plain loop over rows (struct.pack per value)."""

import struct

import numpy as np

from ingest import copy

FORMATS = {"timestamptz": ">q", "float8": ">d", "int8": ">q", "int4": ">i", "int2": ">h"}


def rows_by_loop(columns: list[copy.Column]) -> list[bytes]:
    """Each row's bytes (field count, then each field's length and value), one by one."""
    out = []
    for i in range(len(columns[0].values)):
        row = struct.pack(">h", len(columns))
        for col in columns:
            if col.null is not None and col.null[i]:
                row += struct.pack(">i", -1)
            elif col.kind == "text":
                value = col.labels[int(col.values[i])].encode()
                row += struct.pack(">i", len(value)) + value
            else:
                v = col.values[i].item()
                if col.kind == "timestamptz":
                    v -= copy.PG_EPOCH_US
                row += struct.pack(">i", struct.calcsize(FORMATS[col.kind]))
                row += struct.pack(FORMATS[col.kind], v)
        out.append(row)
    return out


def rows_of(payload: bytes, fields: int) -> list[bytes]:
    """Split a COPY stream into rows' bytes (and check its header and trailer)."""
    assert payload.startswith(copy.HEADER) and payload.endswith(copy.TRAILER)
    body, pos, rows = payload[len(copy.HEADER) : -len(copy.TRAILER)], 0, []
    while pos < len(body):
        start = pos
        assert struct.unpack_from(">h", body, pos)[0] == fields
        pos += 2
        for _ in range(fields):
            (n,) = struct.unpack_from(">i", body, pos)
            pos += 4 + max(n, 0)
        rows.append(body[start:pos])
    return rows


def test_encode_matches_a_loop_over_rows() -> None:
    rng = np.random.default_rng(11)
    for n in (0, 1, 7, 500):
        labels = ["VAN-1", "", "ÄÖÜ-ß", "x" * 64]
        f = rng.normal(size=n)
        f[rng.random(n) < 0.2] = np.nan
        columns = [
            copy.Column("int8", np.arange(n)),
            copy.Column("timestamptz", rng.integers(0, 2 * 10**18, n)),
            copy.Column(
                "text", rng.integers(0, len(labels), n), null=rng.random(n) < 0.1, labels=labels
            ),
            copy.float_column(f),
            copy.float_column(rng.normal(size=n)),
            copy.int_column("int2", rng.integers(-1, 30, n).astype(np.int16)),
            copy.Column("int4", rng.integers(-(2**31), 2**31, n).astype(np.int32)),
        ]
        expected = rows_by_loop(columns)
        got = rows_of(copy.encode(columns), len(columns))
        assert sorted(got) == sorted(expected)  # rows come grouped by layout, in any order


def test_one_layout_keeps_the_row_order() -> None:
    columns = [copy.Column("int8", np.arange(100)), copy.float_column(np.linspace(0, 1, 100)),
               copy.Column("text", np.arange(100) % 3, labels=["AB", "CD", "EF"])]  # fmt: skip
    assert rows_of(copy.encode(columns), 3) == rows_by_loop(columns)
