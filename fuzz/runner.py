"""Run one fuzz target in its own process and read what libFuzzer reports.

Per target, under ``workdir/<target>/``:

* ``seeds/``: rebuilt from the real frames at each run (:mod:`fuzz.corpus`);
* ``corpus/``: what libFuzzer found interesting, kept between runs so that a longer run
  starts where the last one stopped;
* ``<target>.dict``: the libFuzzer dictionary;
* ``crash-<sha1>``, ``timeout-<sha1>``, ``oom-<sha1>``: findings, the input as it was;
* ``last-run.log``: libFuzzer's and atheris's whole output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz.corpus import ROOT, write_dictionary, write_seeds
from fuzz.targets import Target

GRACE_S = 60  # start-up and seed replay on top of the budget before the process is killed

_WRITTEN = re.compile(r"Test unit written to (\S+)")
_STATUS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")
_EXECUTIONS = re.compile(r"stat::number_of_executed_units: (\d+)")
_SUMMARY = re.compile(r"SUMMARY: libFuzzer: (.*)")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # crash | timeout | oom | leak | killed | error
    reproducer: Path | None  # the input that did it (None: the process died without one)
    message: str  # one line: the exception, or what libFuzzer says
    details: str  # the traceback or stack, as atheris printed it


@dataclass(frozen=True, slots=True)
class Result:
    target: str
    executions: int | None
    seconds: float
    coverage: int | None  # libFuzzer "cov": instrumented edges reached
    features: int | None  # libFuzzer "ft": coverage features (edges, counters, comparisons)
    corpus: int | None
    seeds: int
    findings: tuple[Finding, ...]
    log: Path


def command(
    target: Target, folder: Path, *, budget_s: int, timeout_s: int, seed: int | None
) -> list[str]:
    flags = [
        f"-max_total_time={budget_s}",
        f"-timeout={timeout_s}",
        f"-max_len={target.max_len}",
        f"-artifact_prefix={folder}/",
        "-print_final_stats=1",
    ]
    if target.tokens:
        flags.append(f"-dict={folder / (target.name + '.dict')}")
    if seed is not None:
        flags.append(f"-seed={seed}")
    return [
        sys.executable,
        "-m",
        "fuzz.worker",
        target.name,
        *flags,
        str(folder / "corpus"),
        str(folder / "seeds"),
    ]


def run(
    target: Target, workdir: Path, *, budget_s: int, timeout_s: int, seed: int | None = None
) -> Result:
    """Fuzz ``target`` for ``budget_s`` seconds; an input running longer than ``timeout_s``
    is a hang."""
    folder = (workdir / target.name).resolve()
    (folder / "corpus").mkdir(parents=True, exist_ok=True)
    seeds = write_seeds(target, folder / "seeds")
    write_dictionary(target, folder / f"{target.name}.dict")
    log = folder / "last-run.log"
    cmd = command(target, folder, budget_s=budget_s, timeout_s=timeout_s, seed=seed)
    start = time.monotonic()
    killed = None
    with log.open("wb") as out:
        try:
            rc = subprocess.run(
                cmd,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=budget_s + 2 * timeout_s + GRACE_S,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            killed = Finding(
                "killed",
                None,
                f"still running {budget_s + GRACE_S} s after a {budget_s} s budget; killed",
                "",
            )
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    findings = [_finding(text, Path(p)) for p in _WRITTEN.findall(text)]
    if killed is not None:
        findings.append(killed)
    elif rc != 0 and not findings:
        summary = _SUMMARY.findall(text)
        tail = "\n".join(text.splitlines()[-15:])
        findings.append(
            Finding("error", None, summary[-1] if summary else f"exit status {rc}", tail)
        )
    status = _STATUS.findall(text)
    executions = _EXECUTIONS.findall(text)
    return Result(
        target.name,
        int(executions[-1]) if executions else None,
        seconds,
        int(status[-1][0]) if status else None,
        int(status[-1][1]) if status else None,
        int(status[-1][2]) if status else None,
        seeds,
        tuple(findings),
        log,
    )


def _finding(text: str, reproducer: Path) -> Finding:
    kind = "slow-unit" if reproducer.name.startswith("slow-unit") else reproducer.name.split("-")[0]
    lines = text.splitlines()
    for marker in ("=== Uncaught Python exception: ===", "=== Timeout:"):
        start = next((i for i, line in enumerate(lines) if marker in line), None)
        if start is None:
            continue
        block = []
        for line in lines[start + (1 if "exception" in marker else 0) :]:
            if line.startswith(("==", "MS: ")) or not line.strip():
                break
            block.append(line)
        message = block[0].strip() if block else marker
        if "Timeout" in marker:
            message = "hang: " + message.strip("= ")
        return Finding(kind, reproducer, message, "\n".join(block[1:]))
    summary = _SUMMARY.findall(text)
    return Finding(kind, reproducer, summary[-1] if summary else kind, "")
