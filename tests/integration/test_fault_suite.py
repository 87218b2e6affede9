"""The fault suite's short run (``python -m faults --short``, the full one is
``make faults``): every fault ends with nothing acknowledged lost or stored twice, by the
devices' own count. PostgreSQL's outage is in test_faults.py (it restarts the shared
stack's database under the session's processes too)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ROOT

FAULTS = ["offline_backlog", "clock_skew", "broker_restarted", "ingest_kill9", "api_kill9",
          "gate_unplugged"]  # fmt: skip


def test_short_fault_suite_loses_nothing(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "faults", "--short", "--report", str(report),
                          "--only", *FAULTS], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    results = {r["fault"]: r for r in json.loads(report.read_text())["results"]}
    assert len(results) == len(FAULTS)
    for name, r in results.items():
        assert r["ok"] and r["lost"] == 0 and r["duplicates"] == 0, (name, r)
        assert r["published"] > 0 and r["stored"] >= r["published"], (name, r)
        assert r["rejected"] == r["bad_sent"], (name, r)
    assert "lost = 0 for every fault" in out.stdout
