"""milepost benchmarks: every figure is a ratio against a baseline measured in the same run.

    python -m benchmarks [--only NAME ...] [--rounds R] [--rows N]
                         [--messages M] [--batched-messages B] [--naive-messages K]
                         [--latency-seconds S]

The micro cases and ingest need the local stack's TimescaleDB (`make bench` starts it);
such a run uses a fresh database and its own private Mosquitto on a free 127.0.0.1 port.
The geo suite needs neither: with `--only geo` no database is created.

* micro cases (writer_vs_raw_copy, encoder_vs_psycopg_rows, validate_vs_python): each
  runs its baseline and milepost alternately, R rounds, and reports the median of each
  and their ratio; written to benchmarks/results/latest.json.
* ingest (issue 3): milepost end to end against the database ceiling (binary COPY), the
  client ceiling (a bare aiomqtt subscriber; bare paho for reference) and a naive
  INSERT-per-message writer, on the same rows, plus publish-to-commit latency at half
  the sustained rate; targets printed as PASS/MISS (a MISS does not fail the run);
  written to benchmarks/results/ingest.json.
* geo: FenceSet.membership and EtaEstimator.estimate against plain-Python loops (and
  membership against a bare shapely STRtree + contains_xy ceiling), and ETA, binding and
  exception accuracy on a replayed simulated day against its truth; targets printed as
  PASS/MISS; written to benchmarks/results/geo.json.
* api (issue 6): GET /v1/parcels/{tracking_number} and GET /v1/vehicles (2,000 vans) under
  wrk against a bare ASGI endpoint serving the same bytes, each server in its own
  process, on a database of its own; then p50/p99 latency at half the sustained rate
  from a fixed-rate client; targets printed as PASS/MISS; written to
  benchmarks/results/api.json. Needs Debian's wrk (`make bench` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import api, cases, geo, pipeline

RESULTS = Path(__file__).resolve().parent / "results"
INGEST = "ingest"
GEO = "geo"  # needs no database
API = "api"  # makes and drops a database of its own


def main(argv: list[str] | None = None) -> int:
    defaults = pipeline.Params()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--only", nargs="*", choices=[*sorted(cases.CASES), INGEST, GEO, API],
                        default=None)  # fmt: skip
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per micro COPY case")
    parser.add_argument("--messages", type=int, default=defaults.single_messages,
                        help="one-fix messages per ingest drain")  # fmt: skip
    parser.add_argument("--batched-messages", type=int, default=defaults.batched_messages,
                        help="50-fix messages per ingest drain")  # fmt: skip
    parser.add_argument("--fixes-per-message", type=int, default=defaults.fixes_per_message)
    parser.add_argument("--naive-messages", type=int, default=defaults.naive_messages,
                        help="messages for the INSERT-per-message baseline")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=defaults.latency_s,
                        help="measured seconds per latency phase, after a warm-up")  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.rounds, args.messages, args.batched_messages, args.naive_messages,
           args.fixes_per_message) < 1 or args.latency_seconds <= 0:  # fmt: skip
        parser.error("counts, rounds and seconds must be positive")
    names = args.only or [*cases.CASES, INGEST, GEO, API]
    started = time.monotonic()
    db = cases.BenchDb.create() if any(n not in (GEO, API) for n in names) else None
    micro: dict[str, Any] = {}
    ingest: dict[str, Any] | None = None
    geo_result: dict[str, Any] | None = None
    api_result: dict[str, Any] | None = None
    try:
        for name in names:
            print(f"== {name}", file=sys.stderr, flush=True)
            if name == GEO:
                geo_result = geo.run(geo.Params(rounds=args.rounds))
                continue
            if name == API:
                api_result = api.run(api.Params(rounds=args.rounds))
                continue
            assert db is not None
            if name == INGEST:
                params = pipeline.Params(
                    single_messages=args.messages, batched_messages=args.batched_messages,
                    fixes_per_message=args.fixes_per_message,
                    naive_messages=args.naive_messages, rounds=args.rounds,
                    latency_s=args.latency_seconds,
                )  # fmt: skip
                ingest = pipeline.run(db, params)
                continue
            r = micro[name] = cases.CASES[name](db=db, rows=args.rows, rounds=args.rounds)
            print(f"   baseline ({r['baseline']}): {r['baseline_median']:.4g} {r['unit']}\n"
                  f"   milepost ({r['subject']}): {r['subject_median']:.4g} {r['unit']}\n"
                  f"   ratio: {r['ratio']:.3f} ({r['meaning']})", file=sys.stderr)  # fmt: skip
            if "target" in r:
                print(f"   {r['target']}: {r['core_share_at_2000_reads_s']:.3f}"
                      f" {'PASS' if r['pass'] else 'MISS'}", file=sys.stderr)  # fmt: skip
    finally:
        if db is not None:
            try:
                db.drop()
            except psycopg.Error as exc:  # keep the error that stopped the run in view
                print(f"could not drop {db.name}: {exc}", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    head = {"machine": _machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if micro:
        (RESULTS / "latest.json").write_text(json.dumps({**head, "results": micro}, indent=2)
                                             + "\n")  # fmt: skip
        print("micro cases (time ratios, milepost / baseline):",
              json.dumps({k: round(v["ratio"], 3) for k, v in micro.items()}))  # fmt: skip
    if ingest is not None:
        (RESULTS / "ingest.json").write_text(json.dumps({**head, **ingest}, indent=2) + "\n")
        print(pipeline.table(ingest), end="")
    if geo_result is not None:
        (RESULTS / "geo.json").write_text(json.dumps({**head, **geo_result}, indent=2) + "\n")
        print(geo.table(geo_result), end="")
    if api_result is not None:
        (RESULTS / "api.json").write_text(json.dumps({**head, **api_result}, indent=2) + "\n")
        print(api.table(api_result), end="")
    print(f"({time.monotonic() - started:.0f} s; results in {RESULTS})")
    return 0


def _machine() -> dict[str, Any]:
    try:
        mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True,
                                   timeout=10).stdout.splitlines()[0]  # fmt: skip
    except (OSError, IndexError, subprocess.SubprocessError):
        mosquitto = "unknown"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"python": platform.python_version(), "cpus": os.cpu_count() or 0,
            "platform": platform.platform(), "broker": mosquitto,
            "loadavg_at_end": [round(x, 2) for x in load]}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
