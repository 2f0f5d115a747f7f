"""The bench's figures from the shared load generator (dogbooth.commands.loadgen): images/s, failures
and the median latency, for one user alone and for closed-loop clients that saturate the service.

A request without any HTTP answer (refused connection, timeout) stops the bench: a figure from
clients that could not reach the service would measure nothing.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dogbooth.commands import loadgen
from dogbooth.commands.loadgen import Outcome
from dogbooth.core.errors import DogboothError

if TYPE_CHECKING:
    import aiohttp

PathFor = Callable[[int], str]  # request number -> path with query


@dataclass(frozen=True)
class LoadResult:
    images_per_s: float
    completed: int
    failures: int
    p50_ms: float


def _outcomes(
    base_url: str, timeout_s: float, send: Callable[[aiohttp.ClientSession], Awaitable[list[Outcome]]]
) -> list[Outcome]:
    """Run `send` on a fresh session (a fresh event loop, as bench itself is synchronous)."""

    async def main() -> list[Outcome]:
        async with loadgen.session(timeout_s) as client:
            return await send(client)

    outcomes = asyncio.run(main())
    broken = [o for o in outcomes if o.status is None]
    if broken:
        raise DogboothError(f"{base_url}: load client failed: {broken[0].error} ({len(broken)} request(s))")
    return outcomes


def _result(counted: list[Outcome], seconds: float, none_ok: str) -> LoadResult:
    """Images/s over `seconds` and the median latency of the successes; `none_ok` when there are none."""
    latencies = [o.latency_s for o in counted if o.ok]
    if not latencies:
        raise DogboothError(none_ok)
    # The median, not loadgen.percentile's nearest rank: the bench's p50 averages the middle two.
    p50_ms = statistics.median(latencies) * 1000
    return LoadResult(len(latencies) / seconds, len(latencies), len(counted) - len(latencies), p50_ms)


def one_user(base_url: str, path_for: PathFor, *, requests: int, timeout_s: float = 120) -> LoadResult:
    """Sequential requests from one client: the latency a lone user sees (p50 of `requests`)."""
    url_for = _urls(base_url, path_for)
    outcomes = _outcomes(base_url, timeout_s, lambda client: loadgen.sequential(client, url_for, requests))
    elapsed = max((o.done_s for o in outcomes), default=0.0)
    return _result(outcomes, elapsed, f"{base_url}: every one of {requests} requests failed")


def saturate(
    base_url: str,
    path_for: PathFor,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 120,
) -> LoadResult:
    """`concurrency` closed-loop clients; images/s counted only in the window after `warmup_s`."""
    url_for = _urls(base_url, path_for)

    async def clients(client: aiohttp.ClientSession) -> list[Outcome]:
        # No pause after a 503 and no request cap: bench's client count stays within what the service
        # admits (bench.saturating_concurrency), so a refusal is a failure to count, not back-pressure.
        outcomes, _ = await loadgen.closed_loop(
            client, url_for, users=concurrency, duration_s=warmup_s + duration_s, max_requests=None,
            pause_after_refusal_s=0,
        )  # fmt: skip
        return outcomes

    # Only requests that finish inside the window count: those of the warm-up paid for first calls
    # and a filling pipeline.
    window = [o for o in _outcomes(base_url, timeout_s, clients) if warmup_s <= o.done_s <= warmup_s + duration_s]
    return _result(window, duration_s, f"{base_url}: no request completed in the {duration_s:g}s window")


def _urls(base_url: str, path_for: PathFor) -> loadgen.UrlFor:
    return lambda i: base_url + path_for(i)
