"""Overload: offer about 3x the measured capacity and check that the excess is shed fast and cleanly.

The replica refuses a request at once when its estimated finish is past the profile's latency
bound (services/admission.py), and Serve 503s anything beyond its count bounds. So under overload
the accepted requests should see a small multiple of the unloaded latency and the rejected ones an
answer within milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from dogbooth.commands.loadgen import (
    GRACE_S,
    Outcome,
    closed_loop,
    open_loop,
    percentile,
    sequential,
    session,
    status_counts,
)
from dogbooth.commands.reliability import ReliabilityError

log = logging.getLogger("dogbooth.commands.reliability")


@dataclass
class OverloadResult:
    unloaded_p50_ms: float
    capacity_rps: float  # closed-loop throughput with every replica's batch slots asked for
    offered_rps: float
    duration_s: float
    sent: int
    accepted: int  # 200
    rejected: int  # 503: shed by the queue bound
    accepted_p50_ms: float
    accepted_p99_ms: float
    reject_p99_ms: float
    hung: int  # no answer by the request timeout plus grace
    recovered: bool  # the requests right after all succeeded
    after_p50_ms: float
    statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def _unloaded_p50(client: Any, url: str, count: int) -> float:
    warm = await sequential(client, url, 3)  # first requests pay for connection set-up and lazy imports
    unloaded = await sequential(client, url, count)
    bad = [o for o in warm + unloaded if not o.ok]
    if bad:
        raise ReliabilityError(f"the service does not answer single requests before overload: {status_counts(bad)}")
    return percentile((o.latency_s for o in unloaded), 50)


async def _measure(
    url: str, headers: dict[str, str], *, timeout_s: float, users: int, duration_s: float, factor: float,
    capacity_s: float, unloaded_n: int,
) -> OverloadResult:  # fmt: skip
    async with session(timeout_s + GRACE_S, headers) as client:
        p50 = await _unloaded_p50(client, url, unloaded_n)
        log.info(
            "overload: unloaded p50 %.0f ms; measuring capacity with %d users for %.0fs",
            p50 * 1e3,
            users,
            capacity_s,
        )
        busy, elapsed = await closed_loop(client, url, users=users, duration_s=capacity_s)
        capacity = sum(o.ok for o in busy) / elapsed
        if capacity <= 0:
            raise ReliabilityError(f"no request succeeded while measuring capacity: {status_counts(busy)}")
        rate = factor * capacity
        log.info("overload: capacity %.2f req/s; offering %.2f req/s for %.0fs", capacity, rate, duration_s)
        outcomes = await open_loop(client, url, rate=rate, duration_s=duration_s)
        after = await sequential(client, url, 5)
    return _result(outcomes, after, p50=p50, capacity=capacity, rate=rate, duration_s=duration_s)


def _result(
    outcomes: list[Outcome],
    after: list[Outcome],
    *,
    p50: float,
    capacity: float,
    rate: float,
    duration_s: float,
) -> OverloadResult:
    accepted = [o.latency_s for o in outcomes if o.ok]
    rejected = [o.latency_s for o in outcomes if o.status == 503]
    return OverloadResult(
        unloaded_p50_ms=_ms(p50), capacity_rps=round(capacity, 2), offered_rps=round(rate, 2),
        duration_s=duration_s, sent=len(outcomes), accepted=len(accepted), rejected=len(rejected),
        accepted_p50_ms=_ms(percentile(accepted, 50)), accepted_p99_ms=_ms(percentile(accepted, 99)),
        reject_p99_ms=_ms(percentile(rejected, 99)), hung=sum(o.hung for o in outcomes),
        recovered=all(o.ok for o in after), after_p50_ms=_ms(percentile((o.latency_s for o in after), 50)),
        statuses=status_counts(outcomes),
    )  # fmt: skip


def run(
    url: str, headers: dict[str, str], *, request_timeout_s: float, users: int, duration_s: float = 60,
    factor: float = 3.0, capacity_s: float = 15, unloaded_n: int = 20,
) -> OverloadResult:  # fmt: skip
    """Measure unloaded p50 and capacity, then offer `factor` x capacity for `duration_s` seconds.

    `users` should keep every replica's batches full (replicas x max_batch_size); those refused
    pause briefly before their next request, so capacity is the rate the replicas serve.
    """
    return asyncio.run(
        _measure(
            url, headers, timeout_s=request_timeout_s, users=users, duration_s=duration_s, factor=factor,
            capacity_s=capacity_s, unloaded_n=unloaded_n,
        )
    )  # fmt: skip
