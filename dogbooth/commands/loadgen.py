"""The one HTTP load generator behind `bench` and `reliability`: clients that GET `/imagine` and
record each request as an `Outcome` (when it was sent, how long it took, what came back).

Three ways to send, each with a fixed count or duration, on one session of keep-alive connections:
- `sequential`: one request after another, the latency a lone user sees;
- `closed_loop`: N users, each sending its next request when the last one answered (capacity);
- `open_loop`: arrivals at a fixed rate whatever the service does, as real users arrive (overload).

All of it runs on one asyncio loop. On the 2-core machines this runs on, the client competes
with the server for CPU: an aiohttp request costs it about 0.25 ms (plain `http.client` on threads
about 0.2 ms, both measured against a local server), far below the 100+ ms an image costs the
server, and open-loop arrivals need no thread per request in flight. `loadtest/` stays on Locust:
it is the user-facing load test, with Locust's report.

A request is *hung* when no HTTP answer came before the client's deadline, which the reliability
checks set to the service's own request timeout plus GRACE_S: the service promises an answer (at
worst a 408) by its timeout, so silence past it is a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    import aiohttp  # imported where a request is made: ~100 ms the CLI's start need not pay

GRACE_S = 5.0  # on top of the service's request timeout before a request counts as hung

UrlFor = Callable[[int], str]  # request number -> URL; lets each request differ (a seed per request)
Urls = str | UrlFor


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


def imagine_path(params: Mapping[str, Any]) -> str:
    """`/imagine?prompt=...`: the GET every generator sends, its parameters URL-encoded."""
    return f"/imagine?{urlencode(params)}"


def bearer(key: str | None) -> dict[str, str]:
    """The headers that carry an API key (none without one), as the replica expects them."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def session(timeout_s: float, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A client session with one overall deadline per request and no connection cap (counts bound load)."""
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        headers=headers or {},
    )


def _url_for(url: Urls) -> UrlFor:
    return (lambda _: url) if isinstance(url, str) else url


async def send(client: aiohttp.ClientSession, url: str, origin: float) -> Outcome:
    """GET `url`, reading the whole body; never raises for HTTP or network trouble."""
    import aiohttp  # loaded already by `session`: a lookup

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


async def sequential(client: aiohttp.ClientSession, url: Urls, count: int) -> list[Outcome]:
    """`count` requests one after another (the unloaded latency); request i goes to `url(i)`."""
    url_for, origin = _url_for(url), time.monotonic()
    return [await send(client, url_for(i), origin) for i in range(count)]


async def closed_loop(
    client: aiohttp.ClientSession, url: Urls, *, users: int, duration_s: float, max_requests: int | None = 100_000,
    pause_after_refusal_s: float = 1.0,
) -> tuple[list[Outcome], float]:  # fmt: skip
    """`users` clients each sending the next request when the last answered; (outcomes, elapsed seconds).

    No request starts after `duration_s`; those in flight then finish. Requests are numbered in the
    order they start, across users. A client told 503 waits `pause_after_refusal_s` first (the service
    asks for 1 s at least in its Retry-After), as real clients do: resending at once would turn the
    loop into a flood of refusals that takes the CPU the service needs. 0 resends at once, for a
    caller whose client count stays within what the service admits (bench)."""
    url_for, numbers = _url_for(url), itertools.count()
    origin = time.monotonic()
    deadline = origin + duration_s
    outcomes: list[Outcome] = []

    async def user() -> None:
        while time.monotonic() < deadline and (max_requests is None or len(outcomes) < max_requests):
            outcomes.append(outcome := await send(client, url_for(next(numbers)), origin))
            if outcome.status == 503 and pause_after_refusal_s > 0:
                await asyncio.sleep(pause_after_refusal_s)

    await asyncio.gather(*(user() for _ in range(users)))
    return sorted(outcomes, key=lambda o: o.sent_s), time.monotonic() - origin


async def open_loop(
    client: aiohttp.ClientSession, url: Urls, *, rate: float, duration_s: float, origin: float | None = None,
    stop: Callable[[Sequence[Outcome]], bool] | None = None,
) -> list[Outcome]:  # fmt: skip
    """Send `rate` requests per second for `duration_s`, not waiting for answers (arrivals do not slow down
    when the service does, as with real users). `stop(outcomes so far)` may end the arrivals early.
    Returns once every request sent has finished or hit the client deadline."""
    url_for = _url_for(url)
    origin = time.monotonic() if origin is None else origin
    start = time.monotonic()
    count = max(1, int(rate * duration_s))
    outcomes: list[Outcome] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        outcomes.append(await send(client, url_for(i), origin))

    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop is not None and stop(outcomes):
            break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sorted(outcomes, key=lambda o: o.sent_s)
