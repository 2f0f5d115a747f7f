"""A `kubectl port-forward` that waits for its Service and starts again when it ends: Tilt's serve_cmd.

A bare `kubectl port-forward svc/<rayservice>-serve-svc` started by Tilt fails twice over: KubeRay
creates `<rayservice>-serve-svc` and `<rayservice>-head-svc` only once a RayCluster is ready, so the
first try finds no Service; and a forward ends whenever the pod behind it goes (a new RayCluster, a
restarted head), while Tilt never restarts a serve_cmd that has exited. So this loop:

1. asks `kubectl get svc` until the Service exists (the pause between tries doubles up to a cap,
   and each miss is logged with kubectl's reason);
2. runs `kubectl port-forward --address 127.0.0.1 svc/<name> <port>:<port>` until it exits;
3. logs why it exited and starts over.

It runs as long as Tilt keeps the resource; SIGTERM (how Tilt stops a serve_cmd) or Ctrl-C stops
kubectl and ends it with status 0. Every kubectl call goes through `dogbooth.core.tools.Runner`.

    python -m dogbooth.platforms.forward --context kind-dogbooth --namespace dogbooth \\
        --service dogbooth-serve-svc --port 8000
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn

from dogbooth.core.errors import CommandFailed, MissingTools
from dogbooth.core.tools import Runner
from dogbooth.platforms.helm import KubeTarget

log = logging.getLogger("dogbooth.platforms.forward")

ADDRESS = "127.0.0.1"  # the dashboard can run code: never bind another address
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 15.0
STEADY_S = 30.0  # a forward that lasted this long was working: the next restart waits FIRST_PAUSE_S again
GET_TIMEOUT_S = 30.0


class Stopped(Exception):
    """SIGTERM or SIGINT: stop kubectl and end the loop."""


@dataclass(frozen=True)
class Forward:
    service: str
    port: int
    namespace: str
    context: str | None = None

    def kubectl(self, *args: str) -> list[str]:
        target = KubeTarget(context=self.context or None)  # an empty --context means none, as before
        return ["kubectl", *target.kubectl_args(), "-n", self.namespace, *args]

    def find_argv(self) -> list[str]:
        return self.kubectl("get", "svc", self.service, "-o", "name")

    def forward_argv(self) -> list[str]:
        return self.kubectl("port-forward", "--address", ADDRESS, f"svc/{self.service}", f"{self.port}:{self.port}")


class Backoff:
    """Pauses that double from `first` up to `cap`."""

    def __init__(self, first: float = FIRST_PAUSE_S, cap: float = MAX_PAUSE_S) -> None:
        self.first, self.cap, self.pause = first, cap, first

    def next(self) -> float:
        pause, self.pause = self.pause, min(self.pause * 2, self.cap)
        return pause

    def reset(self) -> None:
        self.pause = self.first


def _reason(error: CommandFailed) -> str:
    lines = [line for line in error.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {error.returncode}"


def wait_for_service(fwd: Forward, runner: Runner, sleep: Callable[[float], None] = time.sleep) -> None:
    """Until `kubectl get svc` finds the Service; each miss logged with kubectl's reason."""
    backoff, started = Backoff(), time.monotonic()
    while True:
        try:
            runner.run(fwd.find_argv(), timeout_s=GET_TIMEOUT_S)
            return
        except CommandFailed as e:
            pause = backoff.next()
            log.info(
                "svc/%s is not there yet after %.0fs (%s); KubeRay creates it once the RayCluster is ready. "
                "Next look in %.1fs",
                fwd.service, time.monotonic() - started, _reason(e), pause,
            )  # fmt: skip
            sleep(pause)


def forward_once(fwd: Forward, runner: Runner) -> str:
    """Run the port-forward (its output goes to ours, i.e. Tilt's log) until it exits; why it did."""
    try:
        runner.run(fwd.forward_argv(), stream=True)
    except CommandFailed as e:
        return f"exited {e.returncode}: {_reason(e)}"
    return "exited 0 (kubectl ends a forward when the pod behind it goes)"


def serve(fwd: Forward, runner: Runner | None = None, sleep: Callable[[float], None] = time.sleep) -> NoReturn:
    """Wait for the Service, forward, start again: until Stopped (or a missing kubectl) ends it."""
    runner = runner or Runner()
    restarts = Backoff()
    while True:
        wait_for_service(fwd, runner, sleep)
        started = time.monotonic()
        why = forward_once(fwd, runner)
        if time.monotonic() - started >= STEADY_S:
            restarts.reset()
        pause = restarts.next()
        log.warning("port-forward to svc/%s %s; starting again in %.1fs", fwd.service, why, pause)
        sleep(pause)


def parse_args(argv: Sequence[str] | None = None) -> Forward:
    parser = argparse.ArgumentParser(
        prog="python -m dogbooth.platforms.forward",
        description="kubectl port-forward to a Service on 127.0.0.1 that waits for it and restarts when it ends",
    )
    parser.add_argument("--context", help="kube context (default: kubectl's current one)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--service", required=True, help="the Service to forward, e.g. dogbooth-serve-svc")
    parser.add_argument("--port", required=True, type=int, help=f"the Service port, also bound on {ADDRESS}")
    a = parser.parse_args(argv)
    return Forward(a.service, a.port, a.namespace, a.context)


def _stop(signum: int, frame: FrameType | None) -> None:
    # A second signal must not interrupt Runner while it stops kubectl (it waits a bounded grace).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth.platforms.forward: %(message)s", stream=sys.stderr)
    fwd = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        serve(fwd)
    except Stopped as e:  # Runner has stopped kubectl on the way out
        log.info("stopped by %s", e)
        return 0
    except MissingTools as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
