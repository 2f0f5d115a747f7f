"""Replica kill: SIGKILL the model replica's process under steady load and time the recovery.

The replica is found through the Serve REST API (the same token-protected dashboard `up` deploys
through) and cross-checked against the process table, so only a replica of *this* head is killed.
Recovery is the time from the kill to the first success of a request sent after the kill.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from dogbooth.commands.loadgen import GRACE_S, Outcome, open_loop, session, status_counts
from dogbooth.commands.reliability import ReliabilityError
from dogbooth.platforms.local import LocalState
from dogbooth.render.serveconfig import APP_NAME, DEPLOYMENT_NAME

log = logging.getLogger("dogbooth.commands.reliability")
REPLICA_TITLE = f"ray::ServeReplica:{APP_NAME}:{DEPLOYMENT_NAME}"  # the worker's process title


@dataclass
class KillResult:
    killed_pid: int
    new_pids: list[int]
    rate_rps: float
    recovery_s: float  # inf when no request succeeded again within the bound
    failed: int  # requests that failed between the kill and the recovery
    hung: int
    sent: int
    statuses_after_kill: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recovery_s"] = None if math.isinf(self.recovery_s) else self.recovery_s
        return data


def replica_pids(state: LocalState) -> list[int]:
    """PIDs of the RUNNING replicas of our deployment, each verified to be our head's worker process."""
    app = state.client().applications().get(APP_NAME, {})
    replicas = app.get("deployments", {}).get(DEPLOYMENT_NAME, {}).get("replicas", [])
    pids = []
    for replica in replicas:
        pid = replica.get("pid")
        if replica.get("state") != "RUNNING" or not pid:
            continue
        try:
            proc = psutil.Process(pid)
            title = " ".join(proc.cmdline())
            same_head = os.getsid(pid) == state.sid
        except (psutil.Error, OSError) as e:
            raise ReliabilityError(f"replica pid {pid} from the Serve API is not inspectable: {e}") from e
        if not title.startswith(REPLICA_TITLE) or not same_head:
            raise ReliabilityError(f"pid {pid} is not a replica of this head ({title[:80]!r}); refusing to kill it")
        pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _recovery(outcomes: Sequence[Outcome], kill_s: float) -> float:
    """Seconds from the kill to the first success of a request sent after it."""
    done = [o.done_s for o in outcomes if o.ok and o.sent_s >= kill_s]
    return min(done) - kill_s if done else math.inf


def _result(outcomes: list[Outcome], pid: int, new_pids: list[int], rate: float, kill_s: float) -> KillResult:
    recovery = _recovery(outcomes, kill_s)
    # Requests still running at the kill or sent before the service was back: the ones the fault touched.
    window = [o for o in outcomes if o.done_s >= kill_s and o.sent_s <= kill_s + recovery]
    return KillResult(
        killed_pid=pid, new_pids=new_pids, rate_rps=rate,
        recovery_s=round(recovery, 2) if not math.isinf(recovery) else math.inf,
        failed=sum(not o.ok for o in window), hung=sum(o.hung for o in outcomes), sent=len(outcomes),
        statuses_after_kill=status_counts(o for o in outcomes if o.done_s >= kill_s),
    )  # fmt: skip


async def _drive(
    state: LocalState, url: str, headers: dict[str, str], *, rate: float, timeout_s: float,
    warmup_s: float, bound_s: float, settle_s: float,
) -> KillResult:  # fmt: skip
    pids = replica_pids(state)
    if len(pids) != 1:
        raise ReliabilityError(f"expected one running replica to kill, found {pids}")
    pid, origin = pids[0], time.monotonic()
    kill_s = math.inf

    async def killer() -> None:
        nonlocal kill_s
        await asyncio.sleep(warmup_s)
        log.info("replica kill: SIGKILL pid %d under %.1f req/s", pid, rate)
        os.kill(pid, signal.SIGKILL)
        kill_s = time.monotonic() - origin

    def stop(outcomes: Sequence[Outcome]) -> bool:
        # Keep the load on a little past recovery, so later failures would show too.
        return _recovery(outcomes, kill_s) + settle_s < time.monotonic() - origin - kill_s

    async with session(timeout_s + GRACE_S, headers) as client:
        kill_task = asyncio.create_task(killer())
        outcomes = await open_loop(client, url, rate=rate, duration_s=warmup_s + bound_s, origin=origin, stop=stop)
        await kill_task
    if _alive(pid):
        raise ReliabilityError(f"replica pid {pid} survived SIGKILL")
    return _result(outcomes, pid, replica_pids(state), rate, kill_s)


def run(
    state: LocalState, url: str, headers: dict[str, str], *, request_timeout_s: float, rate: float = 4.0,
    warmup_s: float = 5.0, bound_s: float = 60.0, settle_s: float = 5.0,
) -> KillResult:  # fmt: skip
    """Load at `rate` req/s; SIGKILL the replica at `warmup_s`.

    The load goes on until `settle_s` after the recovery, or `bound_s` at most.
    """
    return asyncio.run(
        _drive(
            state, url, headers, rate=rate, timeout_s=request_timeout_s, warmup_s=warmup_s, bound_s=bound_s,
            settle_s=settle_s,
        )
    )  # fmt: skip
