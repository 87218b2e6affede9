"""api.coalesce: lookups that wait for a fetch in flight share the next fetch."""

from __future__ import annotations

import asyncio

import pytest

from api.coalesce import Coalescer


class Source:
    """A fetch that records its batches and answers when told to (one gate per fetch)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.fail: set[int] = set()

    async def fetch(self, keys: list[int]) -> list[str]:
        self.batches.append(keys)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail & set(keys):
            raise LookupError(f"cannot fetch {sorted(self.fail & set(keys))}")
        return [f"v{k}" for k in keys]

    async def open_all(self) -> None:
        while any(not g.is_set() for g in self.gates) or not self.gates:
            for g in self.gates:
                g.set()
            await asyncio.sleep(0)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def one_in_flight() -> tuple[Source, Coalescer[int, str], asyncio.Future[str]]:
    """A coalescer allowed one fetch at a time, with the fetch of key 1 in flight."""
    src = Source()
    c: Coalescer[int, str] = Coalescer(src.fetch, max_inflight=1)
    first = asyncio.ensure_future(c.get(1))
    await _settle()
    return src, c, first


def test_keys_that_wait_share_the_next_fetch() -> None:
    async def run() -> None:
        src, c, first = await one_in_flight()
        assert src.batches == [[1]]  # alone: fetched at once
        waiting = [asyncio.ensure_future(c.get(k)) for k in (2, 3, 4)]
        await _settle()
        assert src.batches == [[1]]  # the one fetch allowed is in flight: they wait
        src.gates[0].set()
        assert await first == "v1"
        await _settle()
        assert src.batches == [[1], [2, 3, 4]]  # then go together
        src.gates[1].set()
        assert await asyncio.gather(*waiting) == ["v2", "v3", "v4"]
        assert (c.fetches, c.keys) == (2, 4)

    asyncio.run(run())


def test_keys_asked_in_one_turn_go_in_one_fetch() -> None:
    async def run() -> None:
        src = Source()
        c: Coalescer[int, str] = Coalescer(src.fetch, max_inflight=2)
        got = [asyncio.ensure_future(c.get(k)) for k in range(5)]
        await _settle()
        # the first get made a fetch task; by the time it ran, all five were waiting
        assert src.batches == [[0, 1, 2, 3, 4]]
        await src.open_all()
        assert await asyncio.gather(*got) == [f"v{k}" for k in range(5)]

    asyncio.run(run())


def test_max_batch_splits_and_every_key_is_answered() -> None:
    async def run() -> None:
        src = Source()
        c: Coalescer[int, str] = Coalescer(src.fetch, max_inflight=1, max_batch=3)
        got = [asyncio.ensure_future(c.get(k)) for k in range(8)]
        for _ in range(10):
            await src.open_all()
            await _settle()
        assert await asyncio.gather(*got) == [f"v{k}" for k in range(8)]
        assert src.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]

    asyncio.run(run())


def test_an_error_reaches_every_caller_of_its_batch_only() -> None:
    async def run() -> None:
        src, c, first = await one_in_flight()
        src.fail = {2}
        batch = [asyncio.ensure_future(c.get(k)) for k in (2, 3)]
        await _settle()
        await src.open_all()
        assert await first == "v1"
        await _settle()
        await src.open_all()
        for f in batch:
            with pytest.raises(LookupError, match=r"cannot fetch \[2\]"):
                await f
        src.fail = set()
        later = asyncio.ensure_future(c.get(5))  # the coalescer goes on after an error
        await _settle()
        await src.open_all()
        assert await later == "v5"

    asyncio.run(run())


def test_a_caller_that_went_away_does_not_stop_the_others() -> None:
    async def run() -> None:
        src, c, first = await one_in_flight()
        gone, stays = asyncio.ensure_future(c.get(2)), asyncio.ensure_future(c.get(3))
        await _settle()
        gone.cancel()  # a client hung up while its lookup waited
        await src.open_all()
        assert await first == "v1"
        await _settle()
        await src.open_all()
        assert await stays == "v3"
        assert src.batches == [[1], [3]]  # the cancelled key was not fetched
        assert gone.cancelled()

    asyncio.run(run())


def test_a_wrong_number_of_values_is_an_error_not_a_misanswer() -> None:
    async def short(keys: list[int]) -> list[str]:
        return ["only one"]

    async def run() -> None:
        c: Coalescer[int, str] = Coalescer(short)
        got = [asyncio.ensure_future(c.get(k)) for k in (1, 2)]
        for f in got:
            with pytest.raises(RuntimeError, match="1 values for 2 keys"):
                await f
        await c.close()

    asyncio.run(run())


def test_limits_must_be_positive() -> None:
    async def fetch(keys: list[int]) -> list[int]:
        return keys

    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(fetch, max_inflight=0)
