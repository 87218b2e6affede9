"""A long day: ten times the demo's load for a fixed time with faults in the background,
watching what grows (``python -m faults --soak MINUTES``).

The rig of the fault suite with 100 vans publishing one fix a second each (the demo plays
10), a ``kill -9`` of ingest and a broker restart at random moments every few minutes,
and every ``SAMPLE_S``: each process's resident memory (``/proc``), ingest's open batch
and waiting batches (its stats in ``ingest_stats``), and publish-to-stored latency: for
each van, the time from publishing a fix to it showing as the van's newest committed fix
(polled), its p50 and p99 per sample. Written to benchmarks/results/soak.json.

Passes when, after the first fifth (warm-up): the memory of each process grows by less
than 10 % (last sample against the first after warm-up; for ingest, which is killed
every few minutes, over its longest life after warm-up without that life's first fifth,
at least a minute of samples), the waiting batches do not grow, the p99 latency of the
last fifth is within twice that of the first after warm-up, and nothing acknowledged was
lost.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from faults.rig import ROOT, T0_US, Rig, Van, rig
from faults.scenarios import Counts, settle, tally

SAMPLE_S: Final = 10.0
RESULT: Final = ROOT / "benchmarks" / "results" / "soak.json"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Tracker:
    """Per van: when each seq was published (monotonic), and the newest stored seq."""

    def __init__(self, vans: list[Van]) -> None:
        self.published: dict[str, dict[int, float]] = {v.vehicle: {} for v in vans}
        self.latencies: list[float] = []
        self._seen: dict[str, int] = {v.vehicle: -1 for v in vans}
        self.lock = threading.Lock()

    def note(self, vehicle: str, seq: int) -> None:
        with self.lock:
            self.published[vehicle][seq] = time.monotonic()

    def poll(self, r: Rig, vans: list[Van]) -> None:
        rows = r.sql("SELECT vehicle_id, (extract(epoch FROM time) * 1e6)::bigint"
                     " FROM vehicle_latest")  # fmt: skip
        now = time.monotonic()
        step = {v.vehicle: v.step_us for v in vans}
        with self.lock:
            for vid, us in rows:
                if vid not in step:
                    continue
                seq = round((us - T0_US) / step[vid])
                if seq > self._seen[vid]:
                    sent = self.published[vid].pop(seq, None)
                    if sent is not None:
                        self.latencies.append(now - sent)
                    for k in [k for k in self.published[vid] if k < seq]:
                        del self.published[vid][k]
                    self._seen[vid] = seq

    def take(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
        return out


def soak(minutes: float, vans: int = 100, rate_hz: float = 1.0, seed: int = 0,
         fault_every_s: float = 180.0) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    samples: list[dict[str, Any]] = []
    faults: list[tuple[float, str]] = []
    with rig("soak", vans) as r:
        t0 = time.monotonic()
        fleet = [Van(r.broker, vid) for vid in r.vans]
        for v in fleet:
            v.wait_connected()
        tracker = Tracker(fleet)
        stop = threading.Event()

        def publish() -> None:
            seq = 0
            while not stop.is_set():
                for v in fleet:
                    tracker.note(v.vehicle, seq)
                    v.publish([seq])
                seq += 1
                time.sleep(max(0.0, t0 + seq / rate_hz - time.monotonic()))

        def poll() -> None:
            while not stop.is_set():
                tracker.poll(r, fleet)
                time.sleep(0.05)

        threads = [threading.Thread(target=f, daemon=True) for f in (publish, poll)]
        for t in threads:
            t.start()
        end = t0 + minutes * 60
        next_fault = t0 + fault_every_s * rng.uniform(0.5, 1.0)
        next_sample = t0 + SAMPLE_S
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_fault:
                kind = rng.choice(["kill -9 ingest", "restart broker"])
                if kind == "kill -9 ingest":
                    r.ingest.kill9()
                    time.sleep(rng.uniform(0.5, 2.0))
                    r.ingest.start("subscribed to")
                else:
                    r.broker.restart(down_s=rng.uniform(0.5, 3.0))
                faults.append((round(now - t0, 1), kind))
                next_fault = now + fault_every_s * rng.uniform(0.5, 1.5)
            if now >= next_sample:
                lat = tracker.take()
                stats = r.sql("SELECT stats FROM ingest_stats WHERE instance = %s", r.client_id)
                s = stats[0][0] if stats else {}
                samples.append({
                    "t_s": round(now - t0, 1),
                    "ingest_rss_mb": round(rss_mb(r.ingest.proc.pid), 1) if r.ingest.proc else None,
                    "ingest_start": r.ingest.starts,
                    "api_rss_mb": round(rss_mb(r.api.proc.pid), 1) if r.api.proc else None,
                    "batches_waiting": s.get("batches_waiting"),
                    "open_batch_rows": s.get("open_batch_rows"),
                    "latency_p50_s": round(float(np.percentile(lat, 50)), 4) if lat else None,
                    "latency_p99_s": round(float(np.percentile(lat, 99)), 4) if lat else None,
                    "latency_n": len(lat),
                })  # fmt: skip
                print(f"  {samples[-1]}", flush=True)
                next_sample += SAMPLE_S
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        settle(r, fleet, timeout=300)
        counts: Counts = tally("soak", r, fleet, t0)
    return judge(minutes, vans, rate_hz, samples, faults, counts)


def judge(minutes: float, vans: int, rate_hz: float, samples: list[dict[str, Any]],
          faults: list[tuple[float, str]], counts: Counts) -> dict[str, Any]:  # fmt: skip
    warm = samples[len(samples) // 5:]
    checks: list[dict[str, Any]] = []
    if len(warm) >= 2:
        # ingest is killed every few minutes: its longest life after warm-up, without the
        # first fifth of that life (its own start-up)
        lives: dict[int, list[dict[str, Any]]] = {}
        for sample in warm:
            lives.setdefault(sample["ingest_start"], []).append(sample)
        life = max(lives.values(), key=len)
        series = life[len(life) // 5:]
        for name, rows in (("ingest", series), ("api", warm)):
            first, last = rows[0][f"{name}_rss_mb"], rows[-1][f"{name}_rss_mb"]
            growth = (last - first) / first if first else float("nan")
            checks.append({"name": f"{name} memory growth after warm-up", "value": growth,
                           "samples": len(rows), "target": "< 0.10",
                           "pass": growth < 0.10 and len(rows) >= 6})  # fmt: skip
        fifth = max(1, len(warm) // 4)
        p99 = [s["latency_p99_s"] for s in warm if s["latency_p99_s"] is not None]
        if p99:
            early = statistics.median(p99[:fifth])
            late = statistics.median(p99[-fifth:])
            checks.append({"name": "p99 latency, last fifth / first after warm-up",
                           "value": late / early if early else float("nan"),
                           "target": "< 2", "pass": early > 0 and late / early < 2})
        waiting = [s["batches_waiting"] or 0 for s in warm]
        checks.append({"name": "batches waiting, last sample", "value": waiting[-1],
                       "target": "<= max after warm-up start", "pass": waiting[-1] <= max(
                           1, waiting[0])})  # fmt: skip
    checks.append({"name": "lost (acknowledged, not stored)", "value": counts.lost,
                   "target": "0", "pass": counts.lost == 0 and counts.duplicates == 0})
    result = {"minutes": minutes, "vans": vans, "rate_hz": rate_hz,
              "load_fixes_per_s": vans * rate_hz, "faults": faults,
              "counts": {"published": counts.published, "stored": counts.stored,
                         "duplicates": counts.duplicates, "lost": counts.lost},
              "checks": checks, "pass": all(c["pass"] for c in checks),
              "samples": samples}  # fmt: skip
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1))
    return result
