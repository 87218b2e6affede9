"""Gate benchmark: the serial path's CPU cost per read, against a bare frame-splitting loop.

Both sides get the same byte stream (Mercury streaming tag-record frames for parcels
carried through a door, in 64-byte serial reads). The baseline only splits it into
frames; milepost frames, decodes, collects reads into columns and groups them into
passes (ingest.serial's collector + ingest.passes.PassTracker). The figure that matters:
the share of one core a gate at 2,000 reads/s costs (target: under 10 %).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from devices.epc import encode_sscc96
from devices.records import TagRead
from devices.rfid import PROTOCOLS, mercury
from ingest.passes import PassTracker, Reads
from ingest.serial import _Collector

READ_RATE = 2000.0  # reads per second of the target gate
CHUNK = 64  # bytes per serial read


def stream(reads: int, seed: int = 1) -> tuple[bytes, list[str]]:
    rng = np.random.default_rng(seed)
    parcels = [encode_sscc96("0614141", f"{i:010d}", 2) for i in range(max(1, reads // 40))]
    out = bytearray()
    for k in range(reads):
        epc = parcels[k // 40]
        antenna = 1 if k % 40 < 20 else 2
        out += mercury.encode_tag_record_frame(TagRead(
            epc, antenna=antenna, rssi=float(rng.integers(-70, -45)), rssi_dbm=True,
            offset_ms=k % 1000, frequency_khz=915250, phase_deg=0))  # fmt: skip
        if k % 500 == 0:
            out += mercury.encode_keepalive()
    return bytes(out), parcels


def _split_only(data: bytes) -> int:
    framer = mercury.Framer()
    n = 0
    for i in range(0, len(data), CHUNK):
        n += len(framer.feed(data[i : i + CHUNK]))
    return n


def _milepost(data: bytes, reads: int) -> int:
    proto = PROTOCOLS["mercury"]
    framer = proto.framer()
    collector = _Collector("G-1")
    tracker = PassTracker({("G-1", 1): "hall", ("G-1", 2): "dock"})
    t_us = 1_790_000_000_000_000
    step = int(1e6 / READ_RATE)
    passes = 0

    def hand_over() -> int:  # a chunk as the reader thread hands it to the writer
        chunk = collector.chunk()
        codes_of = {e: k for k, e in enumerate(dict.fromkeys(chunk.epcs))}
        r = chunk.reads
        return len(tracker.update(Reads(
            np.zeros(len(r), np.int32), np.array([codes_of[e] for e in chunk.epcs], np.int32),
            r["ts_us"], r["antenna"], r["rssi"], ["G-1"], list(codes_of))))  # fmt: skip

    for i in range(0, len(data), CHUNK):
        for frame in framer.feed(data[i : i + CHUNK]):
            t_us += step
            collector.records(proto.decode(frame), t_us)
        if len(collector.rows) >= 100:
            passes += hand_over()
    return passes + hand_over() + len(tracker.flush())


def gate_decode_vs_split(reads: int = 20_000, rounds: int = 3, **_unused: Any) -> dict[str, Any]:
    data, parcels = stream(reads)
    assert _milepost(data, reads) == len(parcels)  # one pass per parcel
    base, subj = [], []
    for _ in range(rounds):
        t0 = time.process_time()
        _split_only(data)
        base.append(time.process_time() - t0)
        t0 = time.process_time()
        _milepost(data, reads)
        subj.append(time.process_time() - t0)
    b, s = statistics.median(base), statistics.median(subj)
    core_share = s / reads * READ_RATE
    return {"baseline": "Mercury framer only (split frames)",
            "subject": "frame + decode + collect + group into passes", "unit": "CPU s",
            "baseline_runs": base, "subject_runs": subj, "baseline_median": b,
            "subject_median": s, "ratio": s / b, "reads": reads,
            "reads_per_cpu_s": reads / s, "core_share_at_2000_reads_s": core_share,
            "target": "core share < 0.10", "pass": core_share < 0.10,
            "meaning": "milepost CPU / split-only CPU for the same stream"}  # fmt: skip


if __name__ == "__main__":
    import json

    print(json.dumps(gate_decode_vs_split(), indent=2))
