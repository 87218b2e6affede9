"""milepost benchmarks: every figure is a ratio against a baseline measured in the same run.

    python -m benchmarks [--rows N] [--messages M] [--only NAME ...]

Needs the local stack (`make bench` starts it). Results go to benchmarks/results/latest.json.
Each case runs its baseline and milepost alternately, several rounds, and reports the
median of each and their ratio, so a noisy neighbour shifts both sides alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from benchmarks import cases

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--rows", type=int, default=200_000, help="rows per COPY case")
    parser.add_argument("--messages", type=int, default=20_000, help="MQTT messages per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(cases.CASES), default=None)
    args = parser.parse_args(argv)
    names = args.only or list(cases.CASES)
    db = cases.BenchDb.create()
    results = {}
    try:
        for name in names:
            print(f"== {name}", file=sys.stderr, flush=True)
            case = cases.CASES[name]
            results[name] = case(db=db, rows=args.rows, messages=args.messages,
                                 rounds=args.rounds)  # fmt: skip
            r = results[name]
            print(f"   baseline ({r['baseline']}): {r['baseline_median']:.4g} {r['unit']}\n"
                  f"   milepost ({r['subject']}): {r['subject_median']:.4g} {r['unit']}\n"
                  f"   ratio: {r['ratio']:.3f} ({r['meaning']})", file=sys.stderr)  # fmt: skip
    finally:
        db.drop()
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": {"python": platform.python_version(), "cpus": _cpus()},
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}
    (RESULTS / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: round(v["ratio"], 3) for k, v in results.items()}))
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
