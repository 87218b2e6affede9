"""The invariant check that every decoded position must pass, whatever its format."""

from __future__ import annotations

import math
import time

from devices.records import US_PER_S, GpsFix

TS_MIN_US = 946_684_800 * US_PER_S  # 2000-01-01T00:00:00Z
FUTURE_SLACK_US = 25 * 3600 * US_PER_S  # a device clock may run up to a day (+1 h) ahead


def check_fix(fix: GpsFix, *, now_us: int | None = None) -> None:
    """Assert the invariants of one decoded fix; ``now_us`` defaults to the wall clock."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    assert isinstance(fix.ts_us, int) and not isinstance(fix.ts_us, bool), fix
    assert TS_MIN_US <= fix.ts_us <= now + FUTURE_SLACK_US, f"time out of range: {fix}"
    assert math.isfinite(fix.lat_deg) and -90.0 <= fix.lat_deg <= 90.0, fix
    assert math.isfinite(fix.lon_deg) and -180.0 <= fix.lon_deg <= 180.0, fix
    assert (fix.lat_deg, fix.lon_deg) != (0.0, 0.0), f"null island is no fix: {fix}"
    # Optional floats are NaN when unknown, never infinite.
    for name in ("speed_mps", "heading_deg", "acc_m", "alt_m", "hdop"):
        value = getattr(fix, name)
        assert isinstance(value, float) and not math.isinf(value), f"{name}: {fix}"
    assert math.isnan(fix.speed_mps) or fix.speed_mps >= 0.0, fix
    assert math.isnan(fix.heading_deg) or 0.0 <= fix.heading_deg <= 360.0, fix
    assert math.isnan(fix.acc_m) or fix.acc_m >= 0.0, fix
    assert math.isnan(fix.hdop) or fix.hdop >= 0.0, fix
    assert isinstance(fix.sats, int) and fix.sats >= -1, fix
    assert isinstance(fix.seq, int) and fix.seq >= -1, fix
