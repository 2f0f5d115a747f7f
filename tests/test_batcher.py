"""The replica's batcher (services/batcher.py), driven by real asyncio with a stand-in model call."""

from __future__ import annotations

import asyncio

import pytest

from services.batcher import Batcher


class Model:
    """Doubles its inputs and records the batches it saw. `gated`: each call waits for `release`."""

    def __init__(self, fail_on: int | None = None, gated: bool = False) -> None:
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.busy = asyncio.Event()  # set once a call has started
        self.release = asyncio.Event()
        if not gated:
            self.release.set()

    async def __call__(self, values: list[int]) -> list[int]:
        self.batches.append(values)
        self.busy.set()
        await self.release.wait()
        if self.fail_on in values:
            raise ValueError(f"bad input {self.fail_on}")
        return [2 * v for v in values]


async def queued(batcher: Batcher[int, int], count: int) -> None:
    """Until `count` submissions wait in the batcher's queue (each task needs a turn of the loop)."""
    for _ in range(1000):
        if batcher.qsize() == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{batcher.qsize()} queued, expected {count}")


def test_requests_arriving_while_the_model_is_busy_form_the_next_batch() -> None:
    async def scenario() -> tuple[list[int], Model]:
        model = Model(gated=True)
        batcher = Batcher(model, max_batch_size=8, batch_wait_timeout_s=0.001)
        first = asyncio.create_task(batcher.submit(0))
        await model.busy.wait()  # the model is now busy with [0]
        later = [asyncio.create_task(batcher.submit(v)) for v in range(1, 6)]
        await queued(batcher, 5)
        model.release.set()
        return [await first, *await asyncio.gather(*later)], model

    results, model = asyncio.run(scenario())
    assert results == [0, 2, 4, 6, 8, 10]
    assert model.batches == [[0], [1, 2, 3, 4, 5]]  # @serve.batch in Ray 2.60 made five batches of one here


def test_batches_never_exceed_the_maximum() -> None:
    async def scenario() -> Model:
        model = Model(gated=True)
        batcher = Batcher(model, max_batch_size=3, batch_wait_timeout_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await model.busy.wait()
        rest = [asyncio.create_task(batcher.submit(v)) for v in range(1, 10)]
        await queued(batcher, 9)  # nine waiting: three full batches
        model.release.set()
        await asyncio.gather(first, *rest)
        return model

    assert asyncio.run(scenario()).batches == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_a_caller_gone_before_its_batch_is_skipped() -> None:
    async def scenario() -> Model:
        model = Model(gated=True)
        batcher = Batcher(model, max_batch_size=8, batch_wait_timeout_s=0.0)
        busy = asyncio.create_task(batcher.submit(0))
        await model.busy.wait()
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await queued(batcher, 2)
        gone.cancel()  # what Serve does on its request timeout or a client disconnect
        model.release.set()
        assert await kept == 4 and await busy == 0
        assert gone.cancelled()
        return model

    assert asyncio.run(scenario()).batches == [[0], [2]]


def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    async def scenario() -> tuple[list[object], Batcher[int, int]]:
        batcher = Batcher(Model(fail_on=1), max_batch_size=2, batch_wait_timeout_s=0.0)
        outcomes = await asyncio.gather(*(batcher.submit(v) for v in range(4)), return_exceptions=True)
        return outcomes, batcher

    outcomes, batcher = asyncio.run(scenario())
    assert [type(o) for o in outcomes[:2]] == [ValueError, ValueError]
    assert outcomes[2:] == [4, 6]
    assert batcher.stats() == {"batches": 2, "images": 4, "largest": 2, "mean": 2.0, "switches": 0}


def test_a_model_that_loses_results_is_an_error_not_a_hang() -> None:
    async def short(values: list[int]) -> list[int]:
        return values[:1]

    async def scenario() -> None:
        batcher = Batcher(short, max_batch_size=4, batch_wait_timeout_s=0.0)
        await asyncio.gather(*(batcher.submit(v) for v in range(2)))

    with pytest.raises(RuntimeError, match="batch of 2 returned 1"):
        asyncio.run(scenario())


def adapter_of(value: int) -> str | None:
    """Keys as the replica uses them: values 100+ belong to adapter "a", 200+ to "b", the rest to the base."""
    return {1: "a", 2: "b"}.get(value // 100)


def test_a_batch_holds_one_adapter_and_base_requests_batch_together() -> None:
    async def scenario() -> Model:
        model = Model(gated=True)
        batcher = Batcher(model, max_batch_size=8, batch_wait_timeout_s=0.0, key=adapter_of)
        busy = asyncio.create_task(batcher.submit(0))
        await model.busy.wait()
        waiting = [asyncio.create_task(batcher.submit(v)) for v in (100, 1, 200, 101, 2, 201, 3)]
        await queued(batcher, 7)
        model.release.set()
        await asyncio.gather(busy, *waiting)
        return model

    batches = asyncio.run(scenario()).batches
    assert batches == [[0], [100, 101], [1, 2, 3], [200, 201]]
    assert all(len({adapter_of(v) for v in batch}) == 1 for batch in batches)


def test_the_oldest_waiting_request_picks_the_next_adapter_so_none_starves() -> None:
    """A flood for adapter "a" (more than a batch, refilled while it runs) must not hold back "b"."""

    async def scenario() -> Model:
        model = Model(gated=True)
        batcher = Batcher(model, max_batch_size=2, batch_wait_timeout_s=0.0, key=adapter_of)
        tasks = [asyncio.create_task(batcher.submit(100))]
        await model.busy.wait()
        tasks += [asyncio.create_task(batcher.submit(v)) for v in (101, 200, 102, 103, 104)]
        await queued(batcher, 5)
        model.release.set()
        await asyncio.gather(*tasks)
        return model

    # "b"'s one request came third: it runs right after the first waiting batch of "a", not after all of them.
    assert asyncio.run(scenario()).batches == [[100], [101, 102], [200], [103, 104]]
