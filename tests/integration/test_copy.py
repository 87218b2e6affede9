"""The NumPy binary COPY encoder, checked against what PostgreSQL reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from ingest import copy


def test_random_rows_round_trip_through_postgres(db: psycopg.Connection) -> None:
    rng = np.random.default_rng(3)
    n = 2000
    labels = ["VAN-1", "", "ÄÖÜ-ß", "x" * 64]
    codes = rng.integers(0, len(labels), n)
    ts = rng.integers(0, 2_000_000_000_000_000, n)
    f = rng.normal(size=n)
    f[rng.random(n) < 0.2] = np.nan
    i2 = rng.integers(-1, 30, n).astype(np.int16)
    i8 = rng.integers(-1, 2**40, n)
    text_null = rng.random(n) < 0.1
    payload = copy.encode([
        copy.Column("int8", np.arange(n)),  # rows may come out grouped; this puts them back
        copy.Column("timestamptz", ts),
        copy.Column("text", codes, null=text_null, labels=labels),
        copy.float_column(f),
        copy.int_column("int2", i2),
        copy.int_column("int8", i8),
    ])
    with db.transaction():
        db.execute("CREATE TEMP TABLE t (k int8, ts timestamptz, s text, f float8, a int2,"
                   " b int8)")  # fmt: skip
        with db.cursor().copy("COPY t (k, ts, s, f, a, b) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(payload)
        rows = db.execute("SELECT ts, s, f, a, b FROM t ORDER BY k").fetchall()
        db.execute("DROP TABLE t")
    assert len(rows) == n
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for k, (t, s, fv, a, b) in enumerate(rows):
        assert t == epoch + timedelta(microseconds=int(ts[k]))
        assert s == (None if text_null[k] else labels[codes[k]])
        assert (fv is None) if np.isnan(f[k]) else fv == f[k]
        assert a == (None if i2[k] < 0 else i2[k])
        assert b == (None if i8[k] < 0 else i8[k])
