"""The decoder fuzz targets (``python -m fuzz``): seeds replayed, then every target fuzzed
for a few seconds through the same command line ``make fuzz`` runs; no finding allowed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.__main__ import main
from fuzz.corpus import SOURCES, seeds
from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 3  # per target; two at a time: about 35 s for the eleven
JOBS = 2


def test_every_target_has_seeds_from_the_real_frames() -> None:
    assert set(SOURCES) == set(TARGETS)
    for target in TARGETS.values():
        assert len(seeds(target)) >= 3, target.name


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_seed_keeps_the_contract(name: str) -> None:
    target = TARGETS[name]
    for seed in seeds(target):
        target.harness(seed)  # raises on a broken contract, as under the fuzzer


def test_reproduce_runs_one_saved_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "nmea" / "crash-0"
    saved.parent.mkdir()
    saved.write_bytes(b"\x01$GPRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*00")
    assert main(["--reproduce", str(saved)]) == 0
    assert "nmea mode repaired" in capsys.readouterr().out


def test_fuzz_every_target_briefly(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fuzz",
        "--budget-seconds",
        str(BUDGET_S),
        "--jobs",
        str(JOBS),
        "--workdir",
        str(tmp_path),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=len(TARGETS) * (BUDGET_S + 30)
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    executions = {
        m[1]: int(m[2])
        for m in re.finditer(r"^fuzz: (\S+) +ok +executions +(\d+)", proc.stdout, re.M)
    }
    assert set(executions) == set(TARGETS), out
    assert all(n >= 100 for n in executions.values()), out
    assert re.search(r"^fuzz: 11 targets, \d+ executions, .* 0 findings$", proc.stdout, re.M), out
