"""`python -m dogbooth bench`'s parts that need no stack: the raw sweep and phases on tiny, the served
shape it picks, the profile it serves, and the lone-request breakdown. Figures go to the bench's own
report (docs/performance.md), never into an assert here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dogbooth.commands import bench, benchparts, benchraw
from dogbooth.commands.benchload import LoadResult
from dogbooth.commands.benchraw import BenchOptions, Case, RawRun, Shape
from dogbooth.core.errors import DogboothError
from services.pipeline import Generator
from services.requestlog import FILE_PREFIX, FILE_SUFFIX

TINY_FAST = Case("tiny", 64, 2)


def _run(threads: int, per_batch: dict[int, float]) -> RawRun:
    return RawRun(threads, per_batch, 100.0, [0.1])


@pytest.fixture(scope="module")
def tiny_generator() -> Generator:
    return benchraw.load(bench.bench_profile(TINY_FAST).serve.app)


def test_raw_run_measures_each_batch_size_on_the_given_threads(tiny_generator: Generator) -> None:
    opts = BenchOptions(duration_s=0.1, batch_sizes=(1, 2), single_requests=2)
    run = benchraw.run_threads(tiny_generator.pipe, TINY_FAST, opts, threads=1)
    assert run.threads == 1
    assert set(run.images_per_s_by_batch) <= {1, 2} and 1 in run.images_per_s_by_batch
    assert len(run.single_s) >= 2 and run.p50_ms > 0
    assert run.images_per_s == max(run.images_per_s_by_batch.values())


def test_phases_time_dogbooths_generate_path_and_the_plain_call(tiny_generator: Generator) -> None:
    phases = benchraw.phases(tiny_generator, TINY_FAST, requests=2)
    assert set(phases) == {"generate_and_encode_ms", "encode_ms", "plain_pipeline_ms"}
    assert phases["generate_and_encode_ms"] > phases["encode_ms"] > 0


def test_thread_counts_go_from_one_to_the_usable_cpus() -> None:
    counts = benchraw.thread_counts("cpu")
    assert counts[0] == 1 and counts == list(range(1, len(counts) + 1))
    assert benchraw.thread_counts("cuda") == [0]


def test_shape_one_single_threaded_replica_per_core_when_threads_scale_badly() -> None:
    runs = {1: _run(1, {1: 5.0, 8: 10.0}), 2: _run(2, {8: 12.0})}
    shape = benchraw.choose_shape(runs, BenchOptions(shape="auto"))
    cpus = len(os.sched_getaffinity(0))
    assert shape.threads is not None and shape.replicas * shape.threads <= cpus
    if cpus == 2:
        assert (shape.replicas, shape.threads) == (2, 1)  # 2 x 10 beats 1 x 12


def test_shape_fewer_replicas_when_threads_scale_well() -> None:
    cpus = len(os.sched_getaffinity(0))
    runs = {t: _run(t, {8: 10.0 * t}) for t in range(1, cpus + 1)}  # perfect thread scaling: a tie
    shape = benchraw.choose_shape(runs, BenchOptions())
    assert (shape.replicas, shape.threads) == (1, cpus)


@pytest.mark.parametrize("given", ["2by1", "0x1", "x", "2x"])
def test_a_bad_shape_names_the_flag(given: str) -> None:
    with pytest.raises(DogboothError, match="--shape"):
        benchraw.choose_shape({}, BenchOptions(shape=given))


def test_a_given_shape_is_served_as_given() -> None:
    shape = benchraw.choose_shape({}, BenchOptions(shape="3x2"))
    profile = bench.bench_profile(Case("tiny", 64, 20), BenchOptions(), shape)
    assert (profile.serve.deployment.num_replicas, profile.serve.app.threads) == (3, 2)
    assert profile.serve.app.admission.max_latency_x is None  # saturation is the figure


def test_cuda_bench_profile_serves_fp16_on_one_gpu_at_512() -> None:
    case = bench.case_for("sd15", BenchOptions(device="cuda"))
    assert (case.side, case.steps) == (512, 25)
    profile = bench.bench_profile(case, BenchOptions(device="cuda"), Shape(1, None, "gpu"))
    app = profile.serve.app
    assert (app.model, app.device, app.dtype, app.threads) == ("sd15", "cuda", "float16", None)
    assert profile.serve.deployment.num_gpus == 1 and app.limits.max_side >= 512
    assert (app.defaults.width, app.defaults.steps) == (512, 25)


def test_size_and_steps_override_every_model() -> None:
    assert bench.case_for("sd15", BenchOptions(steps=1, size=64)) == Case("sd15", 64, 1)


@pytest.mark.parametrize(("models", "device"), [("tiny,big", "cpu"), ("", "cpu"), ("tiny", "tpu")])
def test_bad_models_or_device_are_refused_before_any_work(models: str, device: str) -> None:
    with pytest.raises(DogboothError, match="--models|--device"):
        bench.run(BenchOptions(models=models, device=device))


def test_breakdown_splits_the_served_p50_by_where_it_was_spent() -> None:
    lines = [
        {"queue_wait_ms": 2.5, "generate_ms": 400.0, "encode_ms": 1.0, "total_ms": 410.0},
        {"queue_wait_ms": 3.5, "generate_ms": 420.0, "encode_ms": 1.0, "total_ms": 430.0},
        {"queue_wait_ms": 2.5, "generate_ms": 400.0, "encode_ms": 1.0, "total_ms": 410.0},
    ]
    phases = {"generate_and_encode_ms": 391.0, "encode_ms": 1.0, "plain_pipeline_ms": 385.0}
    parts = benchparts.breakdown(430.0, 6.0, lines, phases, batch_wait_timeout_s=0.002)
    assert (parts["queue_wait_ms"], parts["batch_wait_ms"]) == (0.5, 2.0)
    assert (parts["generate_ms"], parts["encode_ms"], parts["replica_total_ms"]) == (400.0, 1.0, 410.0)
    assert parts["handler_other_ms"] == 6.5 and parts["http_ms"] == 20.0 and parts["serving_overhead_ms"] == 30.0
    assert parts["bench_process_generate_ms"] == 390.0 and parts["requests_in_log"] == 3


def test_breakdown_without_a_request_log_leaves_the_replica_parts_unknown() -> None:
    phases = {"generate_and_encode_ms": 391.0, "encode_ms": 1.0, "plain_pipeline_ms": 385.0}
    parts = benchparts.breakdown(430.0, 6.0, [], phases, batch_wait_timeout_s=0.002)
    assert parts["generate_ms"] is None and parts["http_ms"] is None and parts["handler_other_ms"] is None


def test_request_log_lines_of_every_replica_are_read_oldest_first(tmp_path: Path) -> None:
    (tmp_path / f"{FILE_PREFIX}a{FILE_SUFFIX}").write_text('{"ts": "2026-01-01T00:00:02", "n": 2}\n{"ts": "20')
    (tmp_path / f"{FILE_PREFIX}b{FILE_SUFFIX}").write_text('{"ts": "2026-01-01T00:00:01", "n": 1}\n')
    (tmp_path / "serve_controller.log").write_text("not a request line\n")
    assert [line["n"] for line in benchparts.read_lines(tmp_path)] == [1, 2]  # the torn line is skipped


def test_loop_report_marks_each_goal() -> None:
    text = bench.loop_report({"up_warm_s": 12.3, "reload_s": 0.5, "reload_requests": 6, "reload_failed_requests": 1})
    assert "up_warm_s 12.3 (goal <= 10.0: MISSED)" in text
    assert "reload_s 0.5 (goal <= 3.0: met)" in text
    assert "1 of 6 requests failed" in text


def test_entry_ratios_overhead_and_goal_marks_from_given_measurements() -> None:
    profile = bench.bench_profile(bench.CASES["small"], BenchOptions(), Shape(1, 1, "given"))
    at_shape, best = _run(1, {1: 2.0, 4: 4.0}), _run(2, {4: 5.0})
    phases = {"generate_and_encode_ms": 101.0, "encode_ms": 1.0, "plain_pipeline_ms": 100.0}
    raw = {"at_shape": at_shape, "runs": {1: at_shape, 2: best}, "shape": Shape(1, 1, "given"), "phases": phases,
           "load_average": 1.0, "gpu_options": None}  # fmt: skip
    http = {
        "served": (LoadResult(9, 9, 0, 110.0), LoadResult(3.8, 38, 0, 900.0)),
        "baseline": (LoadResult(8, 8, 0, 130.0), LoadResult(3.0, 30, 0, 1200.0)),
        "http_only": LoadResult(100, 100, 0, 3.0), "lone": [], "concurrency": 9, "profile": profile,
        "load_average": 1.0,
    }  # fmt: skip
    entry = bench.entry(bench.CASES["small"], raw, http)
    ratios = (entry["served_over_raw"], entry["served_over_raw_best"], entry["served_over_baseline"])
    assert ratios == (0.95, 0.76, 1.267)
    assert (entry["p50_overhead_ms"], entry["raw_best_threads"], entry["raw_best_images_per_s"]) == (10.0, 2, 5.0)
    line = bench.report({"small": entry}).splitlines()[1]
    assert "b/a*>=0.85:MISSED" in line and "b/c>=1:met" in line and "p50+<=15:met" in line
    entry["p50_overhead_ms"] = 40.0
    assert "p50+<=15:MISSED" in bench.report({"small": entry})
