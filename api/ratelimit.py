"""Per-key rate limits: a token bucket per API key in each API process.

A key may make ``rate_limit_per_s`` requests a second on average with bursts of
``rate_limit_burst``; beyond that it gets ``429 rate_limited`` with ``Retry-After`` (whole
seconds until a token is back). The buckets live in the process (several API processes
each allow the rate: set it per process); idle buckets are dropped so the table stays
bounded by the keys active in the last ``IDLE_S``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Final

IDLE_S: Final = 600.0
MAX_BUCKETS: Final = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class RateLimiter:
    rate_per_s: float
    burst: int
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _swept: float = 0.0

    def take(self, key_id: int, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        if self.rate_per_s <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        b = self._buckets.get(key_id)
        if b is None:
            if len(self._buckets) >= MAX_BUCKETS or t - self._swept > IDLE_S:
                self._sweep(t)
            b = self._buckets[key_id] = _Bucket(float(self.burst), t)
        b.tokens = min(float(self.burst), b.tokens + (t - b.at) * self.rate_per_s)
        b.at = t
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate_per_s

    def _sweep(self, now: float) -> None:
        self._swept = now
        for k in [k for k, b in self._buckets.items() if now - b.at > IDLE_S]:
            del self._buckets[k]


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
