"""The per-key token bucket (api/ratelimit.py), on a clock the test turns."""

from __future__ import annotations

from api.ratelimit import RateLimiter, retry_after


def test_a_burst_then_the_rate_and_each_key_on_its_own() -> None:
    r = RateLimiter(rate_per_s=2.0, burst=3)
    assert [r.take(1, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = r.take(1, now=100.0)
    assert wait == 0.5 and retry_after(wait) == "1"
    assert r.take(2, now=100.0) == 0.0  # another key has its own bucket
    assert r.take(1, now=100.5) == 0.0  # one token back after 1 / rate
    assert r.take(1, now=100.5) > 0
    assert [r.take(1, now=200.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to the burst
    assert r.take(1, now=200.0) > 0


def test_no_limit_and_idle_buckets_are_forgotten() -> None:
    assert all(RateLimiter(0.0, 1).take(1, now=0.0) == 0.0 for _ in range(100))
    r = RateLimiter(rate_per_s=1.0, burst=1)
    r.take(1, now=0.0)
    r.take(2, now=1000.0)  # a new key after IDLE_S sweeps the idle one
    assert set(r._buckets) == {2}
