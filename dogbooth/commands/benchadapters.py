"""`nox -s bench -- --adapters N`: many LoRA adapters behind one replica (docs/adapters.md).

One adapter is trained (real LoRA steps on tiny) and copied under N ids: every copy costs a real load
from the store, which is what is measured. Figures, all over HTTP on a private Ray head:
  cold_load_*: the first request for an adapter not in memory, minus a base request just after it;
  warm_switch_p95_ms: a request for a held adapter other than the last one, minus a same-adapter request;
  images_per_s_1_adapter / _8_adapters: closed-loop saturation, all on one adapter or spread over 8;
  max_loaded: adapters held once all N were asked for (the LRU's bound).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from dogbooth.commands.benchload import saturate
from dogbooth.commands.loadgen import imagine_path, percentile
from dogbooth.core.paths import REPO_ROOT
from dogbooth.platforms import local
from dogbooth.settings.profiles import Profile, with_overrides
from training import config as config_mod
from training.run import run as train

log = logging.getLogger("dogbooth.commands.bench")
GOALS = {"cold_load_p95_ms": 300, "warm_switch_p95_ms": 20, "ratio_8_over_1": 0.7, "max_loaded": 32}
SWITCH_ADAPTERS = 8


def make_store(directory: Path, count: int) -> list[str]:
    """`count` adapters in `directory`: one real LoRA export, copied (loading each is the real cost)."""
    # validate_every past the run: one grid at the end is enough here
    flags = {"method": "lora", "max_train_steps": 10, "validate_every": 10_000, "output": directory / "a000"}
    train(config_mod.load("local", flags))
    ids = [f"a{i:03d}" for i in range(count)]
    for adapter_id in ids[1:]:
        shutil.copytree(directory / "a000", directory / adapter_id)
    return ids


def _timed_ms(url: str, params: dict[str, Any]) -> float:
    started = time.perf_counter()
    r = requests.get(url, params=params, timeout=120)
    if r.status_code != 200:
        raise RuntimeError(f"{url} {params}: {r.status_code} {r.text[:200]}")
    return (time.perf_counter() - started) * 1000


def _latencies(endpoint: str, query: dict[str, Any], ids: list[str], held: list[str]) -> dict[str, Any]:
    """Cold loads over every id (in order, so past the LRU's size they evict too), then warm switches
    between `held`, the most recently used (in memory)."""
    base = lambda: _timed_ms(endpoint, {**query, "seed": 1})  # noqa: E731
    for _ in range(3):
        base()  # warm-up
    cold = []
    for adapter_id in ids:
        first = _timed_ms(endpoint, {**query, "seed": 1, "adapter": adapter_id})
        cold.append(first - base())
    same = [_timed_ms(endpoint, {**query, "seed": 1, "adapter": held[-1]}) for _ in range(9)]
    same_p50 = statistics.median(same)
    switches = [
        _timed_ms(endpoint, {**query, "seed": 1, "adapter": adapter_id}) - same_p50
        for _ in range(3)
        for adapter_id in held
    ]
    return {
        "cold_load_p50_ms": round(statistics.median(cold), 1),
        "cold_load_p95_ms": round(percentile(cold, 95), 1),
        "warm_switch_p95_ms": round(percentile(switches, 95), 1),
        "same_adapter_p50_ms": round(same_p50, 1),
    }


def measure(profile: Profile, count: int, duration_s: float, concurrency: int) -> dict[str, Any]:
    """Bring up `profile` (the bench's local profile) on a store of `count` adapters and measure."""
    directory = Path(tempfile.mkdtemp(prefix="dogbooth-bench-adapters-"))
    try:
        ids = make_store(directory / "store", count)
        served = with_overrides(profile, adapters=directory / "store")
        state = local.start_head(served, REPO_ROOT)
        try:
            local.deploy(state, served)
            endpoint = f"{state.endpoint_base}/imagine"
            defaults = served.serve.app.defaults
            query = {"prompt": "a photo of sks object", "img_size": defaults.width, "steps": defaults.steps}
            held = ids[-SWITCH_ADAPTERS:]  # the most recently used once every id was asked for: in memory
            figures = _latencies(endpoint, query, ids, held)
            loaded = requests.get(f"{state.endpoint_base}/readyz", timeout=30).json()["adapters"]
            one = saturate(state.endpoint_base, lambda i: imagine_path({**query, "seed": i, "adapter": held[-1]}),
                           concurrency=concurrency, duration_s=duration_s, warmup_s=2)  # fmt: skip
            eight = saturate(state.endpoint_base, lambda i: imagine_path({**query, "seed": i, "adapter": held[i % 8]}),
                             concurrency=concurrency, duration_s=duration_s, warmup_s=2)  # fmt: skip
        finally:
            local.stop(state)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        **figures,
        "images_per_s_1_adapter": round(one.images_per_s, 3),
        "images_per_s_8_adapters": round(eight.images_per_s, 3),
        "max_loaded": len(loaded["loaded"]),
        "max_loaded_setting": loaded["max_loaded"],
        "adapter_bytes_held": loaded["bytes"],
        "adapters": count,
        "concurrency": concurrency,
        "failures": one.failures + eight.failures,
    }


def report(r: dict[str, Any]) -> str:
    ratio = r["images_per_s_8_adapters"] / r["images_per_s_1_adapter"] if r["images_per_s_1_adapter"] else 0.0
    figures = {
        "cold_load_p95_ms": (r["cold_load_p95_ms"], "<=", r["cold_load_p95_ms"] <= GOALS["cold_load_p95_ms"]),
        "warm_switch_p95_ms": (r["warm_switch_p95_ms"], "<=", r["warm_switch_p95_ms"] <= GOALS["warm_switch_p95_ms"]),
        "ratio_8_over_1": (round(ratio, 2), ">=", ratio >= GOALS["ratio_8_over_1"]),
        "max_loaded": (r["max_loaded"], ">=", r["max_loaded"] >= GOALS["max_loaded"]),
    }
    checks = [(f"{name} {value} {op} {GOALS[name]}", ok) for name, (value, op, ok) in figures.items()]
    return "adapters: " + "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks)
