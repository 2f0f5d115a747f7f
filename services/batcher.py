"""The replica's micro-batcher: the next batch is formed when the model is free, not before.

`@serve.batch` in Ray 2.60 forms a batch as soon as a request arrives (after its wait timeout) and
only then queues the batch for the model (ray-project/ray#53096 made batches concurrent). With
one batch at a time, every request that arrives while the model is busy becomes a batch of one:
measured on the local profile at 6 req/s, 52 of 52 batches had one image while two more requests
waited. Here one worker takes everything waiting, up to `max_batch_size`, each time the model
frees up, so batches grow with the load, which is the point of batching.

A batch holds values of one key (a LoRA adapter id; None for the base model): the next batch is
formed for the key of the oldest waiting value, so no key starves however busy another is, and
values of that key join it in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("dogbooth.batcher")
In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class Seat:
    """Where a submitted value rode: filled in by the batcher when its batch starts (logs, metrics)."""

    batch_id: int = 0  # this replica's batch count: 1 for its first batch
    batch_size: int = 0
    queue_wait_s: float = 0.0  # from submit until its batch started, the batch's wait timeout included


@dataclass
class _Item(Generic[In, Out]):
    value: In
    key: Hashable
    future: asyncio.Future[Out]
    seat: Seat
    arrived: float


class Batcher(Generic[In, Out]):
    """`await submit(x)` returns `run([..., x, ...])`'s answer for x; `run` sees one batch at a time."""

    def __init__(
        self,
        run: Callable[[list[In]], Awaitable[list[Out]]],
        max_batch_size: int,
        batch_wait_timeout_s: float,
        key: Callable[[In], Hashable] = lambda _: None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.key = key
        self.queue: deque[_Item[In, Out]] = deque()  # arrival order, all keys
        self._arrived = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.images = 0
        self.largest = 0
        self.switches = 0  # batches whose key differs from the batch before
        self._last_key: Hashable = None

    def qsize(self) -> int:
        return len(self.queue)

    async def submit(self, value: In, seat: Seat | None = None) -> Out:
        """`run`'s answer for `value`; `seat`, when given, is filled in when its batch starts."""
        if self.worker is None or self.worker.done():  # started lazily: it needs the serving event loop
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self.queue.append(_Item(value, self.key(value), future, seat or Seat(), time.monotonic()))
        self._arrived.set()
        return await future  # cancelling the caller cancels the future: the worker then skips it

    def _drain(self, batch: list[_Item[In, Out]]) -> None:
        """Move waiting items of the batch's key into it, oldest first; other keys keep their places."""
        key = batch[0].key
        kept: deque[_Item[In, Out]] = deque()
        while self.queue:
            item = self.queue.popleft()
            if item.key == key and len(batch) < self.max_batch_size:
                batch.append(item)
            else:
                kept.append(item)
        self.queue = kept

    async def _next_batch(self) -> list[_Item[In, Out]]:
        while not self.queue:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self.queue.popleft()]  # the oldest waiting item decides the key
        self._drain(batch)
        if len(batch) < self.max_batch_size and self.batch_wait_timeout_s > 0:
            await asyncio.sleep(self.batch_wait_timeout_s)  # a moment for simultaneous arrivals to join
            self._drain(batch)
        return [item for item in batch if not item.future.done()]  # callers gone (timeout, disconnect)

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self.batches += 1
            self.images += len(batch)
            self.largest = max(self.largest, len(batch))
            started = time.monotonic()
            for item in batch:
                item.seat.batch_id, item.seat.batch_size = self.batches, len(batch)
                item.seat.queue_wait_s = started - item.arrived
            if batch[0].key != self._last_key:
                self.switches += 1
                self._last_key = batch[0].key
            try:
                results = await self.run([item.value for item in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            except Exception as e:  # one failed batch must not stop the worker
                log.exception("batch of %d failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def stats(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "images": self.images,
            "largest": self.largest,
            "mean": round(self.images / self.batches, 2) if self.batches else 0.0,
            "switches": self.switches,
        }
