"""Latency-bounded admission (services/admission.py): the cost model and the admit/refuse decision.

The class is plain Python driven by a clock we set, so every decision here is exact. The real
replica under real overload is `nox -s reliability`'s overload phase.
"""

from __future__ import annotations

import math

import pytest

from services.admission import SHEDDING_HOLD_S, Admission, CostModel

DEFAULT = (20, 7.5, 64, 64)
BIG = (20, 7.5, 128, 128)  # 4x the pixels


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def model(*batches: tuple[int, float]) -> CostModel:
    m = CostModel()
    for size, seconds in batches:
        m.observe(size, seconds)
    return m


def test_the_fit_recovers_a_fixed_plus_per_image_cost() -> None:
    m = model((1, 0.3), (2, 0.4), (4, 0.6), (8, 1.0))  # 0.2 s + 0.1 s per image
    assert m.predict(1) == pytest.approx(0.3)
    assert m.predict(6) == pytest.approx(0.8)


def test_one_batch_size_seen_is_priced_cautiously_both_ways() -> None:
    m = model((4, 0.8), (4, 0.8))
    assert m.predict(2) == pytest.approx(0.8)  # smaller: no saving assumed
    assert m.predict(8) == pytest.approx(1.6)  # larger: no batching gain assumed


def test_lone_cost_is_the_quiet_one_not_the_latest() -> None:
    m = model((1, 0.30), (1, 0.31), (1, 0.90), (1, 0.32))  # one slow outlier while the machine was busy
    assert m.lone() == pytest.approx(0.30)
    assert model((4, 0.8)).lone() == pytest.approx(0.8)  # nothing ran alone: the fit's guess


def test_a_fresh_replica_admits_everything() -> None:
    admission = Admission(2.5, 8, clock=Clock())
    decisions = [admission.offer(i, DEFAULT) for i in range(20)]
    assert all(d.admit for d in decisions)
    assert math.isnan(decisions[0].estimate_s)


def trained(max_latency_x: float | None = 2.5, batch: int = 8) -> tuple[Admission, Clock]:
    clock = Clock()
    admission = Admission(max_latency_x, batch, clock=clock)
    admission.finish([(DEFAULT, 1, 0.3), (DEFAULT, 2, 0.4), (DEFAULT, 4, 0.6), (DEFAULT, 8, 1.0)])
    return admission, clock


def test_an_idle_replica_admits_a_lone_request() -> None:
    admission, _ = trained()
    decision = admission.offer("a", DEFAULT)
    assert decision.admit
    assert decision.estimate_s == pytest.approx(0.3)
    assert decision.bound_s == pytest.approx(0.75)


def test_the_queue_ahead_counts_until_the_bound_refuses() -> None:
    admission, clock = trained()
    admission.start(["r1", "r2"], [DEFAULT, DEFAULT])  # a batch of two predicted at 0.4 s is running
    # Waiting requests form the next batch: 0.4 s running + 0.2 + 0.1 k must stay <= 0.75 s: k <= 1.
    first = admission.offer("a", DEFAULT)
    second = admission.offer("b", DEFAULT)
    assert first.admit and first.estimate_s == pytest.approx(0.7)
    assert not second.admit and second.estimate_s == pytest.approx(0.8)
    assert second.retry_after_s == 1
    assert admission.refused == 1
    clock.now += 0.3  # the running batch is nearly done: room for one more in the next batch
    assert admission.offer("c", DEFAULT).admit
    assert admission.snapshot()["waiting"] == 2


def test_batches_beyond_the_batch_size_queue_behind_each_other() -> None:
    admission, _ = trained(max_latency_x=10, batch=2)
    for key in range(4):  # two full batches of 2 ahead: 0.4 + 0.4, then ours alone 0.3
        admission.offer(key, DEFAULT)
    assert admission.offer("late", DEFAULT).estimate_s == pytest.approx(1.1)


def test_started_finished_and_dropped_requests_leave_the_queue() -> None:
    admission, clock = trained()
    admission.offer("a", DEFAULT)
    admission.offer("b", DEFAULT)
    admission.drop("b")  # timed out before its batch started
    admission.start(["a"], [DEFAULT])
    assert admission.snapshot()["waiting"] == 0 and admission.snapshot()["running"]
    clock.now += 0.3
    admission.finish([(DEFAULT, 1, 0.3)])
    assert admission.offer("c", DEFAULT).estimate_s == pytest.approx(0.3)


def test_an_unseen_shape_is_priced_from_a_known_one() -> None:
    admission, _ = trained()
    decision = admission.offer("big", BIG)  # idle replica: alone, so admitted whatever it costs
    assert decision.admit and decision.estimate_s == pytest.approx(4 * 0.3)
    assert admission.offer("small", DEFAULT).estimate_s == pytest.approx(1.2 + 0.3)  # the big one is ahead


def test_off_admits_everything_but_still_tracks_the_queue() -> None:
    admission, _ = trained(max_latency_x=None)
    assert all(admission.offer(i, DEFAULT).admit for i in range(50))
    assert admission.snapshot()["waiting"] == 50


def test_a_burst_up_to_always_admit_is_taken_whatever_it_costs() -> None:
    clock = Clock()
    admission = Admission(2.5, 8, always_admit=4, clock=clock)
    admission.finish([(DEFAULT, 1, 0.3), (DEFAULT, 4, 1.2)])  # no batching gain at all: 0.3 s per image
    admission.start(["r1", "r2"], [DEFAULT, DEFAULT])
    burst = [admission.offer(key, BIG) for key in ("a", "b")]  # 4x the pixels, estimated far past the bound
    assert all(d.admit for d in burst)
    assert admission.in_replica() == 4
    assert not admission.offer("c", DEFAULT).admit  # the fifth is judged by its estimate


def test_once_it_refuses_the_floor_is_off_for_a_while_but_an_idle_replica_always_admits() -> None:
    clock = Clock()
    admission = Admission(2.5, 8, always_admit=4, clock=clock)
    admission.finish([(DEFAULT, 1, 0.3), (DEFAULT, 4, 1.2)])  # 0.3 s per image
    admission.start(["r1", "r2", "r3", "r4"], [DEFAULT] * 4)
    assert admission.snapshot()["shedding_s"] == 0
    assert not admission.offer("x", DEFAULT).admit  # 1.2 s running + 0.3 > 0.75: overload begins
    assert admission.snapshot()["shedding_s"] == SHEDDING_HOLD_S  # /readyz shows how long the floor is off
    clock.now += 2
    assert admission.snapshot()["shedding_s"] == SHEDDING_HOLD_S - 2
    admission.finish([(DEFAULT, 4, 1.2)])
    admission.start(["r5"], [BIG])  # 1.2 s
    assert not admission.offer("y", DEFAULT).admit  # one in the replica, under the floor of 4, yet refused
    # The machine slows down threefold: even alone an image now costs more than 2.5x the fastest seen.
    admission.finish([(BIG, 1, 3.6), (DEFAULT, 2, 1.8), (DEFAULT, 3, 2.7), (DEFAULT, 2, 1.8), (DEFAULT, 3, 2.7)])
    idle = admission.offer("z", DEFAULT)
    assert idle.admit and idle.estimate_s > idle.bound_s  # idle: admitted, or it would never learn again
    admission.drop("z")
    clock.now += 6  # the overload is over
    admission.offer("a", DEFAULT)
    assert admission.offer("b", DEFAULT).admit  # the floor is back
