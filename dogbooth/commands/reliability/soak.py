"""Soak: steady traffic at about 70 % of capacity for a long while; memory growth and latency drift.

An open loop sends requests at a fixed rate for `duration_s` while the replica's resident memory
(RSS, from the process table) is sampled. Two windows are compared, each `window_s` long: the
first (the replica settles: caches, allocator pools) and the last.
- `rss_growth_pct`: RSS at the end against RSS at the end of the first window.
- `p99_drift`: the p99 latency of the 200s sent in the last window over that of the first.
A leak or a slowly growing queue shows in one or the other. The window is 60 s; a soak shorter
than 5 minutes (a quick run, a test) uses a fifth of its length instead, so the windows never overlap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from dogbooth.commands.loadgen import GRACE_S, Outcome, open_loop, percentile, session, status_counts
from dogbooth.commands.reliability import ReliabilityError, replica_kill
from dogbooth.platforms.local import LocalState

log = logging.getLogger("dogbooth.commands.reliability")

FULL_WINDOW_S = 60.0
SHORT_SOAK_S = 300.0  # below this the windows shrink to a fifth of the run


@dataclass
class SoakResult:
    duration_s: float
    rate_rps: float
    window_s: float
    sent: int = 0
    server_errors: int = 0  # 5xx
    hung: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rss_first_mb: float | None = None  # at the end of the first window
    rss_end_mb: float | None = None
    rss_growth_pct: float | None = None
    p99_first_ms: float | None = None
    p99_last_ms: float | None = None
    p99_drift: float | None = None
    replica_pids: list[int] = field(default_factory=list)  # more than one: the replica was replaced
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_for(duration_s: float) -> float:
    return FULL_WINDOW_S if duration_s >= SHORT_SOAK_S else round(duration_s / 5, 1)


def _rss_mb(pids: list[int]) -> float | None:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return None
    return total / 2**20 if pids else None


async def _sample(state: LocalState, result: SoakResult, origin: float, every_s: float, stop: asyncio.Event) -> None:
    """RSS of the running replicas every `every_s` until `stop`."""
    while not stop.is_set():
        pids = await asyncio.to_thread(replica_kill.replica_pids, state)
        result.replica_pids = sorted(set(result.replica_pids) | set(pids))
        rss = _rss_mb(pids)
        if rss is not None:
            result.rss_samples.append((round(time.monotonic() - origin, 1), round(rss, 1)))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            continue


def _rss_at(samples: list[tuple[float, float]], at_s: float) -> float | None:
    """The first sample taken at or after `at_s`."""
    later = [mb for t, mb in samples if t >= at_s]
    return later[0] if later else None


def summarize(result: SoakResult, outcomes: list[Outcome]) -> SoakResult:
    w, end = result.window_s, result.duration_s
    result.sent, result.statuses = len(outcomes), status_counts(outcomes)
    result.server_errors = sum(1 for o in outcomes if o.status is not None and o.status >= 500)
    result.hung = sum(o.hung for o in outcomes)
    first = [o.latency_s for o in outcomes if o.ok and o.sent_s < w]
    last = [o.latency_s for o in outcomes if o.ok and o.sent_s >= end - w]
    if first and last:
        result.p99_first_ms = round(percentile(first, 99) * 1000, 1)
        result.p99_last_ms = round(percentile(last, 99) * 1000, 1)
        result.p99_drift = round(result.p99_last_ms / result.p99_first_ms, 3)
    result.rss_first_mb = _rss_at(result.rss_samples, w)
    result.rss_end_mb = result.rss_samples[-1][1] if result.rss_samples else None
    if result.rss_first_mb and result.rss_end_mb is not None:
        result.rss_growth_pct = round((result.rss_end_mb / result.rss_first_mb - 1) * 100, 2)
    return result


async def _drive(state: LocalState, url: str, headers: dict[str, str], result: SoakResult, timeout_s: float) -> None:
    stop, origin = asyncio.Event(), time.monotonic()
    sampler = asyncio.create_task(_sample(state, result, origin, min(5.0, result.window_s / 4), stop))
    async with session(timeout_s + GRACE_S, headers) as client:
        outcomes = await open_loop(client, url, rate=result.rate_rps, duration_s=result.duration_s, origin=origin)
    end_rss = _rss_mb(replica_kill.replica_pids(state))
    if end_rss is not None:
        result.rss_samples.append((round(time.monotonic() - origin, 1), round(end_rss, 1)))
    stop.set()
    await sampler
    summarize(result, outcomes)


def run(
    state: LocalState, url: str, headers: dict[str, str], *, rate: float, duration_s: float, request_timeout_s: float
) -> SoakResult:
    """`rate` req/s for `duration_s`; RSS and latency compared between the first and last window."""
    if duration_s < 10:
        raise ReliabilityError(f"a soak of {duration_s:.0f}s has no first and last window; give --soak-s >= 10")
    result = SoakResult(duration_s=duration_s, rate_rps=rate, window_s=window_for(duration_s))
    log.info("soak: %.2f req/s for %.0fs (windows of %.0fs)", rate, duration_s, result.window_s)
    asyncio.run(_drive(state, url, headers, result, request_timeout_s))
    log.info("soak: RSS %s -> %s MB (%s %%), p99 %s -> %s ms (x%s), statuses %s", result.rss_first_mb,
             result.rss_end_mb, result.rss_growth_pct, result.p99_first_ms, result.p99_last_ms, result.p99_drift,
             result.statuses)  # fmt: skip
    return result
