"""dogbooth's own metrics on Ray's Prometheus endpoint, `nox -s metrics`, and the per-request JSON log."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import make_test_profile
from prometheus_client.parser import text_string_to_metric_families

from dogbooth.commands import metrics as metrics_command
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.polling import poll
from dogbooth.platforms import local, promscrape
from services import metrics as m
from services.batcher import Batcher, Seat
from services.requestlog import FILE_PREFIX, RequestLog, Trace, prompt_digest

HISTOGRAMS = (m.BATCH_SIZE, m.QUEUE_WAIT, m.GENERATE, m.ENCODE)
LOG_KEYS = {
    "ts", "request_id", "method", "status", "adapter", "prompt_chars", "prompt_sha256", "shape", "format",
    "admission", "batch_id", "batch_size", "queue_wait_ms", "generate_ms", "encode_ms", "total_ms", "replica", "model",
}  # fmt: skip
SECRET_KEY = "sk-never-logged-" + uuid.uuid4().hex  # sent as a bearer token; the session stack is open


def _every_metric_counted(scrape: promscrape.Scrape) -> bool:
    counted = [scrape.total(f"{m.EXPORTED[h]}_count") for h in HISTOGRAMS]
    counted += [scrape.total(m.EXPORTED[m.ADMISSION]), scrape.total(m.EXPORTED[m.IMAGES])]
    return all(c > 0 for c in counted) and scrape.total(m.EXPORTED[m.RSS]) > 0


def _imagine(base_url: str, prompt: str, seed: int) -> requests.Response:
    params: dict[str, Any] = {"prompt": prompt, "seed": seed, "steps": 2}
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    r = requests.get(f"{base_url}/imagine", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r


def test_every_metric_is_exported_and_the_command_prints_it(stack: Any) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None and state.metrics_url.endswith(f":{stack.profile.ray.metrics_port}/metrics")
    with ThreadPoolExecutor(3) as pool:  # a few at once, so some share a batch
        list(pool.map(lambda i: _imagine(stack.base_url, "a photo of sks dog", i), range(3)))

    def counted(scrape: promscrape.Scrape) -> bool:  # the proxy exports Serve's counts on a clock of its own
        served = scrape.by(metrics_command.SERVE_REQUESTS, "status_code", route="/imagine").get("200", 0)
        return _every_metric_counted(scrape) and served >= 3

    scrape = promscrape.wait_for(state.metrics_url, "every dogbooth metric and Serve's request count", counted)
    names = scrape.names()
    assert [n for n in m.EXPORTED.values() if n not in names and f"{n}_count" not in names] == []
    assert scrape.by(m.EXPORTED[m.IMAGES], "model")["tiny"] >= 3
    assert scrape.by(m.EXPORTED[m.IMAGES], "adapter").get(m.BASE_ADAPTER, 0) >= 3
    assert scrape.by(m.EXPORTED[m.ADMISSION], "outcome").get(m.ADMITTED, 0) >= 3
    mean_batch = promscrape.mean_between(scrape, None, m.EXPORTED[m.BATCH_SIZE])
    assert mean_batch is not None and 1 <= mean_batch <= 8

    argv = [sys.executable, "-m", "dogbooth", "metrics", "--profile", str(stack.profile_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()[1:]}
    assert set(lines) >= {"requests /imagine", "images", "batches", "queue wait", "generate", "encode", "admission"}
    assert "200: " in lines["requests /imagine"] and "tiny: " in lines["images"]
    assert "admitted: " in lines["admission"] and " MiB" in lines["replica RSS"]
    assert "mean - ms" not in done.stdout  # every timing has a value


def test_metrics_command_says_when_the_profile_is_not_up(tmp_path: Path) -> None:
    path = make_test_profile(tmp_path, "pytest-never-up")
    argv = [sys.executable, "-m", "dogbooth", "metrics", "--profile", str(path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 1
    assert "profile pytest-never-up is not up: run `nox -s up -- --profile pytest-never-up`" in done.stderr


def test_one_json_line_per_request_without_key_or_prompt(stack: Any) -> None:
    state = local.LocalState.read(stack.profile.name)
    assert state is not None
    prompt = f"a photo of sks dog on the moon {uuid.uuid4().hex}"
    request_id = _imagine(stack.base_url, prompt, 11).headers["x-request-id"]
    logs = Path(state.temp_dir) / "session_latest" / "logs" / "serve"

    def line_for_request() -> dict[str, Any] | None:
        for path in logs.glob(f"{FILE_PREFIX}*"):
            for text in path.read_text().splitlines():
                if request_id in text:
                    return dict(json.loads(text))
        return None

    line = poll("the request's log line", line_for_request, timeout_s=30, interval_s=0.2)
    assert set(line) == LOG_KEYS
    assert (line["status"], line["method"], line["admission"], line["model"]) == (200, "GET", m.ADMITTED, "tiny")
    assert (line["prompt_chars"], line["prompt_sha256"]) == (len(prompt), prompt_digest(prompt))
    assert line["batch_id"] >= 1 and line["batch_size"] >= 1 and line["adapter"] is None
    assert all(line[k] >= 0 for k in ("queue_wait_ms", "generate_ms", "encode_ms", "total_ms"))
    assert line["generate_ms"] > 0 and line["shape"] == "2x7.5x64x64"
    everything = "".join(p.read_text() for p in logs.glob(f"{FILE_PREFIX}*"))
    assert SECRET_KEY not in everything and prompt not in everything and "on the moon" not in everything


def test_trace_fields_and_file(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, "r1", "tiny")
    trace = Trace("rid-1", "POST", "secret prompt text")
    log.write(trace, 503)
    trace.admission, trace.batch_id, trace.queue_wait_s = m.REFUSED, 4, 0.0125
    log.write(trace, 200)
    first, second = (json.loads(t) for t in log.path.read_text().splitlines())
    assert set(first) == LOG_KEYS and first["status"] == 503 and first["batch_id"] is None
    assert (second["batch_id"], second["queue_wait_ms"], second["admission"]) == (4, 12.5, "refused")
    assert "secret prompt text" not in log.path.read_text() and first["prompt_chars"] == 18


def test_the_batcher_says_which_batch_each_value_rode() -> None:
    async def main() -> list[Seat]:
        async def double(values: list[int]) -> list[int]:
            return [2 * v for v in values]

        batcher: Batcher[int, int] = Batcher(double, max_batch_size=2, batch_wait_timeout_s=0.01)
        seats = [Seat() for _ in range(3)]
        results = await asyncio.gather(*(batcher.submit(i, seat) for i, seat in enumerate(seats)))
        assert results == [0, 2, 4]
        return seats

    seats = asyncio.run(main())
    assert [(s.batch_id, s.batch_size) for s in seats] == [(1, 2), (1, 2), (2, 1)]
    # The third waited for the first batch to run, and then its own batch's wait timeout.
    assert 0 <= seats[0].queue_wait_s < seats[2].queue_wait_s


RECORDED = """# TYPE ray_dogbooth_batch_size histogram
ray_dogbooth_batch_size_bucket{le="1.0",model="tiny"} 2
ray_dogbooth_batch_size_bucket{le="2.0",model="tiny"} 3
ray_dogbooth_batch_size_bucket{le="4.0",model="tiny"} 4
ray_dogbooth_batch_size_bucket{le="+Inf",model="tiny"} 4
ray_dogbooth_batch_size_count{model="tiny"} 4
ray_dogbooth_batch_size_sum{model="tiny"} 7
# TYPE ray_dogbooth_admission_decisions counter
ray_dogbooth_admission_decisions_total{outcome="admitted",replica="a"} 6
ray_dogbooth_admission_decisions_total{outcome="refused",replica="a"} 1
ray_dogbooth_admission_decisions_total{outcome="admitted",replica="b"} 1
"""


def test_scrape_arithmetic_on_a_recorded_scrape() -> None:
    samples = tuple(
        promscrape.Sample(s.name, dict(s.labels), s.value)
        for f in text_string_to_metric_families(RECORDED)
        for s in f.samples
    )
    scrape = promscrape.Scrape("recorded", samples)
    assert scrape.by(m.EXPORTED[m.ADMISSION], "outcome") == {"admitted": 7, "refused": 1}
    assert promscrape.mean_between(scrape, None, m.EXPORTED[m.BATCH_SIZE]) == 7 / 4
    buckets = scrape.buckets(m.EXPORTED[m.BATCH_SIZE])
    assert buckets == {1.0: 2, 2.0: 3, 4.0: 4, math.inf: 4}
    assert promscrape.quantile(buckets, 0.5) == 1.0 and promscrape.quantile(buckets, 0.75) == 2.0
    assert promscrape.quantile({math.inf: 0}, 0.5) is None
    lines = metrics_command.summary(scrape)
    assert any(line.startswith("batches ") and "4, mean size 1.75" in line for line in lines)
    assert any("admitted: 7, refused: 1 (12.5% refused)" in line for line in lines)


def test_fetch_names_the_url_when_nothing_answers() -> None:
    with pytest.raises(promscrape.MetricsUnavailable, match="127.0.0.1:1/metrics does not answer"):
        promscrape.fetch("http://127.0.0.1:1/metrics", timeout_s=2)
