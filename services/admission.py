"""Latency-bounded admission: refuse a request at once when it could not finish in time.

Serve's own bounds count requests (`max_ongoing_requests`, `max_queued_requests`). A count is the
wrong unit for a batching CPU replica: eight queued images cost eight times what one does, and an
accepted request pays for every batch ahead of it. So the replica estimates, from batch times it
measured itself, when a new request would finish, and answers 503 straight away if that is more
than `max_latency_x` times what the same request costs alone. Accepted requests then stay within
a known multiple of the unloaded latency, and the excess gets its answer in milliseconds.

Costs are learned per request shape (steps, guidance, width, height), because one replica serves
all of them and a 512 px, 50-step image costs hundreds of 64 px, 20-step ones:
- `predict(k)`, a batch of k now: a least-squares line through the recent batches of that shape.
  It follows the machine as it is, contended or not.
- `lone`, one image on a quiet replica: the fastest of the recent one-image batches. The bound is
  a multiple of this, so it does not loosen when overload itself slows every batch down.
A shape never seen is priced from the nearest known one, scaled by steps and pixels. With nothing
measured yet (a fresh replica) every request is admitted and Serve's count bounds still apply.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

Shape = tuple[int, float, int, int]  # (steps, guidance, width, height), as Job.shape_key
RECENT = 32  # batches remembered per shape: about a minute of history under load
SHEDDING_HOLD_S = 5.0  # after a refusal, the always_admit floor is off this long: overload is not a burst


class CostModel:
    """Seconds per batch of one shape, learned from measured batches."""

    def __init__(self) -> None:
        self.batches: deque[tuple[int, float]] = deque(maxlen=RECENT)
        self.lone_times: deque[float] = deque(maxlen=RECENT)

    def observe(self, size: int, seconds: float) -> None:
        self.batches.append((size, seconds))
        if size == 1:
            self.lone_times.append(seconds)

    def predict(self, size: int) -> float:
        """Seconds for a batch of `size` under current conditions."""
        sizes = [k for k, _ in self.batches]
        times = [t for _, t in self.batches]
        mean_k, mean_t = statistics.fmean(sizes), statistics.fmean(times)
        spread = sum((k - mean_k) ** 2 for k in sizes)
        if spread == 0:  # one batch size seen: cautious both ways (smaller costs as much, larger in proportion)
            return mean_t * max(1.0, size / mean_k)
        slope = sum((k - mean_k) * (t - mean_t) for k, t in self.batches) / spread
        slope = max(slope, 0.0)
        intercept = max(mean_t - slope * mean_k, 0.0)
        return intercept + slope * size

    def lone(self) -> float:
        """Seconds for one image alone on a quiet replica (falls back to the fit when none ran alone)."""
        if self.lone_times:
            return min(self.lone_times)
        return self.predict(1)


def _work(shape: Shape) -> float:
    steps, guidance, width, height = shape
    return steps * width * height * (2 if guidance > 1 else 1)  # guidance > 1 runs the UNet twice per step


def _scale(shape: Shape, known: Shape) -> float:
    """How much more `shape` costs than `known`: a rough prior, replaced once `shape` has been measured."""
    return _work(shape) / _work(known)


@dataclass(frozen=True)
class Decision:
    admit: bool
    estimate_s: float  # when this request would finish, from now; NaN when nothing is measured yet
    bound_s: float  # max_latency_x times its lone cost; NaN likewise

    @property
    def retry_after_s(self) -> int:
        """Whole seconds until enough of the queue ahead should have drained (HTTP Retry-After)."""
        if self.admit or math.isnan(self.estimate_s):
            return 0
        return max(1, math.ceil(self.estimate_s - self.bound_s))


class Admission:
    """One replica's queue as the batcher will run it, and the admit/refuse decision for a newcomer.

    Up to `always_admit` requests in the replica (running or waiting) are taken whatever they
    cost, so a burst that size never sees a 503; beyond that, the latency bound decides.

    Call `offer` when a request arrives, `start` when the batcher hands a batch to the model,
    `finish` when the batch is done (with each shape's measured time) and `drop` when a request
    leaves before it started (timeout or disconnect). All calls come from the replica's event loop.
    """

    def __init__(
        self, max_latency_x: float | None, max_batch_size: int, always_admit: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_latency_x = max_latency_x
        self.always_admit = always_admit
        self.max_batch_size = max_batch_size
        self.clock = clock
        self.models: dict[Shape, CostModel] = {}
        self.waiting: dict[Hashable, Shape] = {}  # admitted, not started; insertion order = arrival order
        self.running: tuple[float, float, int] | None = None  # (started at, predicted seconds, requests)
        self.refused = 0
        self.shedding_until = -math.inf

    def _model_cost(self, shape: Shape, size: int, lone: bool = False) -> float | None:
        model = self.models.get(shape)
        if model is not None:
            return model.lone() if lone else model.predict(size)
        if not self.models:
            return None
        known = min(self.models, key=lambda s: abs(math.log(_scale(shape, s))))
        model = self.models[known]
        return _scale(shape, known) * (model.lone() if lone else model.predict(size))

    def batch_seconds(self, shapes: Sequence[Shape]) -> float | None:
        """Predicted time of one batch: each shape in it is a separate pipeline call."""
        total = 0.0
        for shape in set(shapes):
            cost = self._model_cost(shape, shapes.count(shape))
            if cost is None:
                return None
            total += cost
        return total

    def _estimate(self, shape: Shape) -> float | None:
        now = self.clock()
        remaining = 0.0
        if self.running is not None:
            started, predicted, _ = self.running
            remaining = max(predicted - (now - started), 0.0)
        queue = [*self.waiting.values(), shape]
        total = remaining
        for i in range(0, len(queue), self.max_batch_size):
            seconds = self.batch_seconds(queue[i : i + self.max_batch_size])
            if seconds is None:
                return None
            total += seconds
        return total

    def offer(self, key: Hashable, shape: Shape) -> Decision:
        """Admit (and enqueue `key`) or refuse a newcomer of `shape`.

        The floor of `always_admit` is for bursts on a replica that is keeping up; once it has had
        to refuse someone (within SHEDDING_HOLD_S), only an idle replica admits whatever the
        estimate says. An idle replica always does: nothing is ahead of the request, and
        refusing there could lock a replica out for good (it learns costs only from what it runs).
        """
        estimate, lone = self._estimate(shape), self._model_cost(shape, 1, lone=True)
        if self.max_latency_x is None or estimate is None or lone is None:
            self.waiting[key] = shape
            return Decision(True, math.nan if estimate is None else estimate, math.nan)
        bound, now = self.max_latency_x * lone, self.clock()
        floor = self.always_admit if now >= self.shedding_until else 1
        if estimate > bound and self.in_replica() >= floor:
            self.refused += 1
            self.shedding_until = now + SHEDDING_HOLD_S
            return Decision(False, estimate, bound)
        self.waiting[key] = shape
        return Decision(True, estimate, bound)

    def start(self, keys: Sequence[Hashable], shapes: Sequence[Shape]) -> None:
        for key in keys:
            self.waiting.pop(key, None)
        self.running = (self.clock(), self.batch_seconds(shapes) or 0.0, len(keys))

    def finish(self, timings: Sequence[tuple[Shape, int, float]]) -> None:
        """Record each pipeline call of the batch: (shape, images, seconds)."""
        for shape, size, seconds in timings:
            self.models.setdefault(shape, CostModel()).observe(size, seconds)
        self.running = None

    def in_replica(self) -> int:
        return len(self.waiting) + (self.running[2] if self.running else 0)

    def drop(self, key: Hashable) -> None:
        self.waiting.pop(key, None)

    def snapshot(self) -> dict[str, object]:
        """What /readyz shows: the queue and the learned lone cost of each shape, in ms."""
        return {
            "max_latency_x": self.max_latency_x,
            "always_admit": self.always_admit,
            "in_replica": self.in_replica(),
            "waiting": len(self.waiting),
            "running": self.running is not None,
            "refused": self.refused,
            # Seconds until the always_admit floor is back after a refusal (0: it is on).
            "shedding_s": round(max(0.0, self.shedding_until - self.clock()), 3),
            "lone_ms": {"x".join(map(str, s)): round(m.lone() * 1000, 1) for s, m in self.models.items()},
        }
