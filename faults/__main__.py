"""milepost fault suite: what the field does to a telemetry server, and what it must lose
(nothing).

    python -m faults [--only NAME ...] [--short] [--seed N] [--list]

Each fault runs against a rig of its own (faults/rig.py: a fresh database on the local
stack's PostgreSQL, a private Mosquitto, ``milepost ingest`` and ``milepost api`` in their
own processes), with devices that count what was acknowledged to them: vans publishing
numbered fixes at QoS 1, a phone posting OsmAnd reports, a dock-door reader on a
pseudo-terminal. The table ends with published / stored / rejected / lost per fault;
the run fails (exit 1) when anything acknowledged was lost or stored twice. ``--short``
is the version ``make test`` runs; ``make faults`` runs the full one. The report is also
written to var/faults/report.json. Needs root (it stops and starts PostgreSQL).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from faults.rig import STATE_DIR, RigError
from faults.scenarios import FAULTS, Counts, Load

REPORT = STATE_DIR / "faults" / "report.json"


def table(results: list[Counts]) -> str:
    head = f"{'fault':<44} {'published':>9} {'stored':>8} {'rejected':>8} {'dup':>5} {'lost':>6}"
    lines = [head, "-" * len(head)]
    for c in results:
        rejected = f"{c.rejected}/{c.bad_sent}" if c.bad_sent else str(c.rejected)
        lines.append(f"{c.fault[:44]:<44} {c.published:>9,} {c.stored:>8,} {rejected:>8}"
                     f" {c.duplicates:>5} {c.lost:>6}  {'ok' if c.ok else 'FAIL'}"
                     f" ({c.seconds:g} s)")  # fmt: skip
        for note in c.notes + [f"PROBLEM: {p}" for p in c.problems]:
            lines.append(f"    {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(FAULTS), metavar="NAME",
                        help=f"run these faults only (of: {', '.join(FAULTS)})")
    parser.add_argument("--short", action="store_true", help="the short versions (make test)")
    parser.add_argument("--seed", type=int, default=None, help="for the moments of the faults")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--report", type=Path, default=REPORT, help=f"default: {REPORT}")
    parser.add_argument("--soak", type=float, metavar="MINUTES", default=None,
                        help="instead: the long day (faults/soak.py) for MINUTES, 10x the"
                             " demo's load; writes benchmarks/results/soak.json")
    for name, kind, what in (("vans", int, "vans publishing"),
                             ("rate_hz", float, "messages a second per van"),
                             ("seconds", float, "seconds of publishing, the fault included"),
                             ("per_message", int, "fixes a message (a JSON array when > 1)")):
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help=f"{what} (a full run: {getattr(Load(), name)})")
    args = parser.parse_args(argv)
    # a SIGTERM (a CI timeout, ^C from make) still stops what the rigs started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.list:
        for name, fn in FAULTS.items():
            print(f"{name:<18} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    if args.soak is not None:
        from faults.soak import soak

        print(f"soak: {args.soak:g} min, seed {seed}", flush=True)
        result = soak(args.soak, seed=seed)
        for c in result["checks"]:
            print(f"  {c['name']:<48} {c['value']!s:>12} {c['target']:>10}"
                  f"  {'PASS' if c['pass'] else 'FAIL'}")  # fmt: skip
        print(f"counts: {result['counts']}; faults: {len(result['faults'])}")
        return 0 if result["pass"] else 1
    load = Load().short() if args.short else Load()
    load = dataclasses.replace(load, **{k: getattr(args, k) for k in
                                        ("vans", "rate_hz", "seconds", "per_message")
                                        if getattr(args, k) is not None})  # fmt: skip
    print(f"faults: {'short' if args.short else 'full'} run, seed {seed}, {load}", flush=True)
    results: list[Counts] = []
    for name in args.only or list(FAULTS):
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            c = FAULTS[name](load, random.Random(f"{seed}-{name}"))
        except RigError as exc:
            c = Counts(name, seconds=round(time.monotonic() - t0, 1), problems=[str(exc)])
        results.append(c)
        print(table([c]).splitlines()[-1 - len(c.notes) - len(c.problems)], flush=True)
    print()
    print(table(results))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"seed": seed, "short": args.short, "load": asdict(load),
                                       "results": [asdict(c) | {"ok": c.ok} for c in results]},
                                      indent=1))  # fmt: skip
    bad = [c.fault for c in results if not c.ok]
    print(f"\n{'FAIL: ' + ', '.join(bad) if bad else 'lost = 0 for every fault'}"
          f" (report: {args.report})")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
