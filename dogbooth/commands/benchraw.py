"""The in-process side of `python -m dogbooth bench`: what the model costs with no serving around it.

sweep: the plain diffusers pipeline call at each torch thread count (1 up to the CPUs this process
  may use) and each batch size; the best of all is the honest ceiling for the served figure;
phases: dogbooth's own generate path (services/pipeline.py), one lone image, split into the
  pipeline call and the encoding, so the served latency can be taken apart (bench.breakdown);
choose_shape: the deployment shape (replicas x threads) the sweep predicts serves the most.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbooth.core.errors import DogboothError
from dogbooth.core.paths import REPO_ROOT
from services.pipeline import Generator, encode, resolve
from services.schemas import AppArgs, ImagineParams

log = logging.getLogger("dogbooth.commands.bench")
PROMPT = "a photo of sks dog in a bucket"


@dataclass(frozen=True)
class Case:
    """What one model is asked for: the image size and steps are part of the benchmark's definition."""

    model: str
    side: int
    steps: int


@dataclass(frozen=True)
class BenchOptions:
    models: str = "tiny,small"
    duration_s: float = 15
    report_dir: Path = REPO_ROOT / "reports" / "bench"
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    single_requests: int = 9
    adapters: int = 0  # LoRA adapters in the store for the adapter figures; 0 = skip them
    device: str = "cpu"  # cuda: fp16, one replica on the GPU, plus scripts/gpu_bench.py's option sweep
    steps: int | None = None  # None: the model's Case
    size: int | None = None
    shape: str = "auto"  # "auto" (from the raw sweep) or "<replicas>x<threads>", e.g. 2x1
    compile: bool = False  # GPU option sweep: also torch.compile the UNet (minutes of compile time)


@dataclass(frozen=True)
class RawRun:
    """The plain pipeline at one torch thread count."""

    threads: int
    images_per_s_by_batch: dict[int, float]
    p50_ms: float  # one image alone, from the few batch-1 calls (phases() times many at the served threads)
    single_s: list[float] = field(repr=False)

    @property
    def best_batch(self) -> int:
        return max(self.images_per_s_by_batch, key=lambda b: self.images_per_s_by_batch[b])

    @property
    def images_per_s(self) -> float:
        return self.images_per_s_by_batch[self.best_batch]


@dataclass(frozen=True)
class Shape:
    replicas: int
    threads: int | None  # None: torch's default (the GPU case)
    rule: str


def thread_counts(device: str) -> list[int]:
    """1 up to the CPUs this process may run on; on a GPU the thread count is not what limits."""
    if device != "cpu":
        return [0]  # 0: leave torch's default
    return list(range(1, len(os.sched_getaffinity(0)) + 1))


def _timed(pipe: Any, case: Case, bs: int) -> float:
    started = time.perf_counter()
    # PIL output: the images reach the host, so a GPU run is synchronized inside the timing.
    pipe(prompt=[PROMPT] * bs, width=case.side, height=case.side, num_inference_steps=case.steps)
    return time.perf_counter() - started


def run_threads(pipe: Any, case: Case, opts: BenchOptions, threads: int) -> RawRun:
    """Images/s per batch size and one image's p50 on `threads` torch threads.

    The sweep stops once two larger batches in a row are clearly slower: past the best size, bigger
    batches only cost time, and on a loaded machine a batch of 8 can take minutes. Each size gets its share of
    `duration_s` and two calls at least; the lone-image p50 that the overhead is measured against
    comes from phases(), at the served thread count only.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    per_batch: dict[int, float] = {}
    single: list[float] = []
    budget = opts.duration_s / len(opts.batch_sizes)
    with torch.inference_mode():
        _timed(pipe, case, 1)  # warm-up: the first call (on a new thread count too) allocates, picks kernels
        for bs in opts.batch_sizes:
            times = [_timed(pipe, case, bs)]
            while sum(times) < budget or len(times) < 2:
                times.append(_timed(pipe, case, bs))
            per_batch[bs] = bs / statistics.median(times)
            single = single or times
            log.info("raw %s, %s threads, batch %d: %.2f images/s", case.model, threads or "default", bs, per_batch[bs])
            best = max(per_batch.values())
            if len(per_batch) >= 3 and all(v < 0.9 * best for v in list(per_batch.values())[-2:]):
                break  # two sizes in a row: one slow call on a busy machine must not end the sweep
    return RawRun(threads or torch.get_num_threads(), per_batch, statistics.median(single) * 1000, single)


def load(app: AppArgs) -> Generator:
    """dogbooth's own Generator (the replica's loader): the raw runs use its pipeline, so raw and served
    run the very same weights, dtype and device."""
    return Generator(app)


def sweep(generator: Generator, case: Case, opts: BenchOptions) -> dict[int, RawRun]:
    import torch

    default = torch.get_num_threads()
    try:
        runs = [run_threads(generator.pipe, case, opts, t) for t in thread_counts(opts.device)]
    finally:
        torch.set_num_threads(default)
    return {r.threads: r for r in runs}


def choose_shape(runs: dict[int, RawRun], opts: BenchOptions) -> Shape:
    """`opts.shape`, or the replicas x threads that the raw figures predict serves the most.

    r replicas of t threads each are predicted at r times the raw rate at t threads (processes do not
    share a thread pool, so they scale better than threads do); ties go to fewer replicas, which cost
    less memory and start faster.
    """
    if opts.shape != "auto":
        replicas, _, threads = opts.shape.partition("x")
        if not (replicas.isdigit() and threads.isdigit() and int(replicas) >= 1 and int(threads) >= 1):
            raise DogboothError(f"--shape: {opts.shape!r}; use auto or <replicas>x<threads>, e.g. 2x1")
        return Shape(int(replicas), int(threads), "given")
    if opts.device != "cpu":
        return Shape(1, None, "one replica per GPU")
    cpus = len(os.sched_getaffinity(0))
    predicted = {t: (cpus // t) * r.images_per_s for t, r in runs.items() if cpus // t >= 1}
    best = max(predicted.values())
    chosen = max(t for t, v in predicted.items() if v >= 0.97 * best)  # within noise: more threads, fewer replicas
    rates = {t: round(v, 2) for t, v in predicted.items()}
    return Shape(cpus // chosen, chosen, f"max over t of (cpus // t) x raw images/s at t threads: {rates}")


def _dogbooth_call(generator: Generator, case: Case, seed: int) -> float:
    job = resolve(ImagineParams(prompt=PROMPT, img_size=case.side, steps=case.steps, seed=seed), generator.args)
    started = time.perf_counter()
    result = generator.generate_many([job])[0]
    if isinstance(result, Exception):
        raise DogboothError(f"bench: {case.model} cannot generate: {result}") from result
    return time.perf_counter() - started


def phases(generator: Generator, case: Case, requests: int) -> dict[str, float]:
    """p50s (ms) of a lone request's in-replica work, in this process: dogbooth's pipeline call and the
    image encoding, next to the plain pipeline call (the `raw` single-image figure).

    The two calls alternate which goes first: measured back to back in a fixed order, the second ran
    ~25 ms (15 %) faster on tiny whichever it was, which read as dogbooth's call being slower.
    """
    import torch

    total, encoding, plain = [], [], []
    with torch.inference_mode():
        for i in range(requests + 1):  # the first is a warm-up
            dogbooth_first = i % 2 == 0
            dogbooth_s = _dogbooth_call(generator, case, i) if dogbooth_first else 0.0
            started = time.perf_counter()
            image = generator.pipe(prompt=[PROMPT], width=case.side, height=case.side,
                                   num_inference_steps=case.steps).images[0]  # fmt: skip
            plain_s = time.perf_counter() - started
            dogbooth_s = dogbooth_s or _dogbooth_call(generator, case, i)
            started = time.perf_counter()
            encode(image, "png")
            if i:
                encoding.append(time.perf_counter() - started)
                total.append(dogbooth_s)
                plain.append(plain_s)
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    return {"generate_and_encode_ms": ms(total), "encode_ms": ms(encoding), "plain_pipeline_ms": ms(plain)}
