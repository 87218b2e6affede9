"""Lookups that wait for a statement in flight share the next one (the DataLoader pattern).

A hot read such as ``GET /v1/parcels/{n}`` costs the API more in the database client (a
pool checkout, a prepared statement's send, the wait, the result) than in the query
itself. Under load, the requests that arrive while earlier lookups are in flight are
gathered and fetched by one statement; a request alone goes at once, with the same
latency as without. Each caller still gets its own answer (or the statement's error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``await get(key)`` is ``fetch([key])[0]``, with keys that wait batched.

    At most ``max_inflight`` fetches run at once; a key asked for while they all run
    waits for the first to end and goes in the next fetch with every other key that
    waited (at most ``max_batch``). Keys asked for in the same turn of the event loop go
    in one fetch too: a fetch takes its keys when it starts to run, not when it is made.
    ``fetch`` answers in the order of its keys, one value each."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Sequence[V]]], *,
                 max_inflight: int = 2, max_batch: int = 64) -> None:  # fmt: skip
        if max_inflight < 1 or max_batch < 1:
            raise ValueError("max_inflight and max_batch must be at least 1")
        self._fetch, self.max_inflight, self.max_batch = fetch, max_inflight, max_batch
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.fetches = 0  # statements run, and keys answered: their ratio is the batch size
        self.keys = 0

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, future))
        if self._inflight < self.max_inflight:
            self._start()
        return await future

    def _start(self) -> None:
        self._inflight += 1
        task = asyncio.create_task(self._run(), name="coalesced fetch")
        self._tasks.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        try:
            # what waits now: everything asked for since this task was made, too
            batch = [(k, f) for k, f in self._waiting[:self.max_batch] if not f.done()]
            del self._waiting[:self.max_batch]
            if not batch:
                return
            self.fetches += 1
            self.keys += len(batch)
            try:
                values = await self._fetch([k for k, _ in batch])
                if len(values) != len(batch):
                    raise RuntimeError(f"fetch answered {len(values)} values for"
                                       f" {len(batch)} keys")  # fmt: skip
            except asyncio.CancelledError:  # shutting down: so are its callers
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), value in zip(batch, values, strict=True):
                if not future.done():  # its caller may have gone (a client hung up)
                    future.set_result(value)
        finally:
            self._inflight -= 1
            if self._waiting and self._inflight < self.max_inflight:
                self._start()

    async def close(self) -> None:
        """Wait for the fetches in flight (at shutdown, before the pool closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
