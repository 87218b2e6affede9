"""``python -m fuzz``: fuzz the decoders, one process per target, and report findings."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuzz.corpus import ROOT
from fuzz.runner import Result, run
from fuzz.targets import TARGETS

DEFAULT_WORKDIR = ROOT / "var" / "fuzz"

EPILOG = f"""\
targets: {", ".join(TARGETS)} (--list describes them)

Each target runs in its own process for the budget, seeded from the real frames
(../shared/data, READERS.md, the decoder tests' frames) and from what earlier runs
found (WORKDIR/<target>/corpus/). A finding is any exception other than the decoder's
documented error, records that break the decoder's contract, or an input running
longer than --timeout-seconds; the input is saved as WORKDIR/<target>/crash-<sha1>
(or timeout-, oom-) and printed with the exception.

exit status: 0 no findings, 1 findings, 2 bad arguments.

examples:
  python -m fuzz --budget-seconds 60
  python -m fuzz --budget-seconds 300 --target nmea --target teltonika
  python -m fuzz --reproduce var/fuzz/nmea/crash-<sha1>
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fuzz",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--budget-seconds",
        type=_positive,
        default=60,
        metavar="N",
        help="fuzzing time per target (default 60)",
    )
    p.add_argument(
        "--target",
        action="append",
        choices=list(TARGETS),
        metavar="NAME",
        help="run only this target (repeatable; default: all)",
    )
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        metavar="N",
        help="targets run at the same time (default 1; at most one per core)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help="seeds, corpus and findings go under DIR/<target>/ (default var/fuzz)",
    )
    p.add_argument(
        "--timeout-seconds",
        type=_positive,
        default=5,
        metavar="S",
        help="one input running longer than this is a hang (default 5)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="libFuzzer's random seed")
    p.add_argument(
        "--reproduce",
        type=Path,
        metavar="FILE",
        help="run one saved input through its target's harness (no libFuzzer) and"
        " print the traceback; the target is --target or FILE's folder",
    )
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def summary_line(r: Result) -> str:
    status = "FINDING" if r.findings else "ok"
    return (
        f"fuzz: {r.target:<10} {status:<7}  executions {_n(r.executions):>9}"
        f"  seconds {r.seconds:6.1f}  cov {_n(r.coverage):>5}  ft {_n(r.features):>6}"
        f"  corpus {_n(r.corpus):>5}  seeds {r.seeds:>4}  findings {len(r.findings)}"
    )


def report(r: Result) -> str:
    lines = [summary_line(r)]
    for f in r.findings:
        lines.append(f"  {f.kind}: {f.message}")
        if f.reproducer is not None:
            lines.append(f"    reproducer: {_show(f.reproducer)}")
            lines.append(f"    reproduce:  python -m fuzz --reproduce {_show(f.reproducer)}")
        lines += [f"    | {line}" for line in f.details.splitlines()[-12:]]
        lines.append(f"    log: {_show(r.log)}")
    return "\n".join(lines)


def reproduce(path: Path, name: str | None) -> int:
    name = name or path.resolve().parent.name
    if name not in TARGETS:
        print(f"fuzz: no target {name!r}; give --target", file=sys.stderr)
        return 2
    data = path.read_bytes()
    target = TARGETS[name]
    mode, payload = target.mode(data)
    print(f"fuzz: {name}{f' mode {mode}' if mode else ''}, {len(payload)} bytes: {payload[:200]!r}")
    try:
        target.harness(data)
    except Exception:
        traceback.print_exc()
        print(f"fuzz: {name}: contract broken by {_show(path)}")
        return 1
    print(f"fuzz: {name}: contract kept (records or the documented error)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            modes = f"  modes: {', '.join(t.modes)}" if t.modes else ""
            print(f"{t.name:<10} {t.decoders}{modes}")
        return 0
    if args.reproduce is not None:
        return reproduce(args.reproduce, args.target[0] if args.target else None)
    names = args.target or list(TARGETS)
    jobs = min(args.jobs, len(names), os.cpu_count() or 1)
    print(
        f"fuzz: {len(names)} targets x {args.budget_seconds} s, {jobs} at a time;"
        f" findings under {_show(args.workdir.resolve())}/<target>/",
        flush=True,
    )
    lock = threading.Lock()

    def one(name: str) -> Result:
        r = run(
            TARGETS[name],
            args.workdir,
            budget_s=args.budget_seconds,
            timeout_s=args.timeout_seconds,
            seed=args.seed,
        )
        with lock:
            print(report(r), flush=True)
        return r

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="fuzz") as pool:
        results = list(pool.map(one, names))
    found = sum(len(r.findings) for r in results)
    executions = sum(r.executions or 0 for r in results)
    print(
        f"fuzz: {len(results)} targets, {executions} executions,"
        f" {sum(r.seconds for r in results):.1f} s, {found} finding{'s' * (found != 1)}"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
