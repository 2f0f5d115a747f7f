"""Load shapes for the Locust suite: steady, step ramp and spike.

Each shape reads the common options (`--users`, `--spawn-rate`, `--run-time`), so the same
command line drives every shape; `--shape` (env `DOGBOOTH_LT_SHAPE`) picks one.
"""

from __future__ import annotations

import math
from typing import ClassVar

from locust import LoadTestShape

from loadtest.mix import SHAPE_NAMES


class _CommonShape(LoadTestShape):
    abstract: ClassVar[bool] = True
    use_common_options: ClassVar[bool] = True

    def _options(self) -> tuple[int, float, float]:
        """(users, spawn rate, run time in s) from the command line."""
        if self.runner is None:
            raise RuntimeError("shape ticked before Locust attached its runner")
        opts = self.runner.environment.parsed_options
        users = max(1, int(getattr(opts, "num_users", None) or 1))
        rate = float(getattr(opts, "spawn_rate", None) or users)
        run_time = float(getattr(opts, "run_time", None) or 60)
        return users, rate, run_time


class Steady(_CommonShape):
    """All users for the whole run, ramped up at the spawn rate."""

    def tick(self) -> tuple[int, float] | None:
        users, rate, run_time = self._options()
        return None if self.get_run_time() >= run_time else (users, rate)


class StepRamp(_CommonShape):
    """Users grow in `STEPS` equal steps over the run: where latency bends is the capacity."""

    STEPS: ClassVar[int] = 4

    def tick(self) -> tuple[int, float] | None:
        users, rate, run_time = self._options()
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        step = min(self.STEPS, 1 + int(elapsed / (run_time / self.STEPS)))
        return max(1, math.ceil(users * step / self.STEPS)), rate


class Spike(_CommonShape):
    """A quarter of the users, then all of them at once for the middle fifth, then a quarter again.

    Shows whether queue bounds turn an overload into fast 503s rather than timeouts, and how fast
    latency recovers.
    """

    def tick(self) -> tuple[int, float] | None:
        users, _, run_time = self._options()
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        base = max(1, users // 4)
        in_spike = 0.4 * run_time <= elapsed < 0.6 * run_time
        # The spike arrives at once (spawn everyone within a second), whatever --spawn-rate says.
        return (users, float(users)) if in_spike else (base, float(users))


SHAPES: dict[str, type[LoadTestShape]] = dict(zip(SHAPE_NAMES, (Steady, StepRamp, Spike), strict=True))
