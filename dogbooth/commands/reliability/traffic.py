"""Bounded HTTP traffic for the reliability checks: every loop has a fixed count and a deadline.

An `Outcome` is one request as the client saw it. A request is *hung* when no HTTP answer came
before the client's deadline, which is the service's own request timeout plus a grace period:
the service promises an answer (at worst a 408) by its timeout, so silence past it is a hang.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp

GRACE_S = 5.0  # on top of the service's request timeout before a request counts as hung


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent (seconds from the run's start), how long it took, what came back."""

    sent_s: float
    latency_s: float
    status: int | None  # None: no HTTP answer at all
    error: str = ""  # "timeout" or the connection error's class name when status is None

    @property
    def done_s(self) -> float:
        return self.sent_s + self.latency_s

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def hung(self) -> bool:
        return self.status is None and self.error == "timeout"


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def status_counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """{"200": 10, "503": 4, "timeout": 1}: statuses, or the error for requests with no answer."""
    counts = Counter(str(o.status) if o.status is not None else (o.error or "no answer") for o in outcomes)
    return dict(sorted(counts.items()))


def session(timeout_s: float, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client session with one overall deadline per request and no connection cap (counts bound load)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        headers=headers or {},
    )


async def send(client: aiohttp.ClientSession, url: str, origin: float) -> Outcome:
    """GET `url`, reading the whole body; never raises for HTTP or network trouble."""
    started = time.monotonic()
    try:
        async with client.get(url) as response:
            await response.read()
            status: int | None = response.status
            error = ""
    except TimeoutError:
        status, error = None, "timeout"
    except aiohttp.ClientError as e:
        status, error = None, type(e).__name__
    return Outcome(started - origin, time.monotonic() - started, status, error)


async def open_loop(
    client: aiohttp.ClientSession, url: str, *, rate: float, duration_s: float, origin: float | None = None,
    stop: Callable[[Sequence[Outcome]], bool] | None = None,
) -> list[Outcome]:  # fmt: skip
    """Send `rate` requests per second for `duration_s`, not waiting for answers (arrivals do not slow down
    when the service does, as with real users). `stop(outcomes so far)` may end the arrivals early.
    Returns once every request sent has finished or hit the client deadline."""
    origin = time.monotonic() if origin is None else origin
    start = time.monotonic()
    count = max(1, int(rate * duration_s))
    outcomes: list[Outcome] = []
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        outcomes.append(await send(client, url, origin))

    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop is not None and stop(outcomes):
            break
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return sorted(outcomes, key=lambda o: o.sent_s)


async def closed_loop(
    client: aiohttp.ClientSession, url: str, *, users: int, duration_s: float, max_requests: int = 100_000,
    pause_after_refusal_s: float = 1.0,
) -> tuple[list[Outcome], float]:  # fmt: skip
    """`users` clients each sending the next request when the last answered; (outcomes, elapsed seconds).

    A client told 503 waits `pause_after_refusal_s` first (the service asks for 1 s at least in its
    Retry-After), as real clients do: resending at once would
    turn the loop into a flood of refusals that takes the CPU the service needs."""
    origin = time.monotonic()
    deadline = origin + duration_s
    outcomes: list[Outcome] = []

    async def user() -> None:
        while time.monotonic() < deadline and len(outcomes) < max_requests:
            outcomes.append(outcome := await send(client, url, origin))
            if outcome.status == 503:
                await asyncio.sleep(pause_after_refusal_s)

    await asyncio.gather(*(user() for _ in range(users)))
    return sorted(outcomes, key=lambda o: o.sent_s), time.monotonic() - origin


async def sequential(client: aiohttp.ClientSession, url: str, count: int) -> list[Outcome]:
    """`count` requests one after another (the unloaded latency)."""
    origin = time.monotonic()
    return [await send(client, url, origin) for _ in range(count)]
