"""The shared load generator (dogbooth.commands.loadgen) and bench's figures from it, against a tiny
local HTTP server: no Ray, no model, a few seconds in all."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from conftest import free_port

from dogbooth.commands import benchload, loadgen
from dogbooth.commands.loadgen import Outcome
from dogbooth.core.errors import DogboothError

T = TypeVar("T")


class _Handler(BaseHTTPRequestHandler):
    """/ok: 200; /busy: 503; /slow: 200 after 1 s. Records each request's `n` query value."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the Serve proxy does
    disable_nagle_algorithm = True  # else headers and body, sent apart, wait out a delayed ACK each
    seen: list[str] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.seen.extend(parse_qs(url.query).get("n", []))
        if url.path == "/slow":
            time.sleep(1)
        status = 503 if url.path == "/busy" else 200
        body = b"image bytes"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _run(send: Callable[[aiohttp.ClientSession], Awaitable[T]], timeout_s: float = 10) -> T:
    async def main() -> T:
        async with loadgen.session(timeout_s) as client:
            return await send(client)

    return asyncio.run(main())


def test_request_building() -> None:
    assert loadgen.imagine_path({"prompt": "a photo of a dog", "seed": 3}) == "/imagine?prompt=a+photo+of+a+dog&seed=3"
    assert loadgen.bearer("k") == {"Authorization": "Bearer k"} and loadgen.bearer(None) == {}


def test_sequential_numbers_requests_and_records_statuses(server: str) -> None:
    outcomes = _run(lambda c: loadgen.sequential(c, lambda i: f"{server}/ok?n={i}", 4))
    assert [o.status for o in outcomes] == [200] * 4 and _Handler.seen == ["0", "1", "2", "3"]
    assert all(b.sent_s >= a.done_s for a, b in zip(outcomes, outcomes[1:], strict=False))  # one at a time


def test_no_answer_is_an_outcome_not_an_exception(server: str) -> None:
    hung = _run(lambda c: loadgen.sequential(c, f"{server}/slow", 1), timeout_s=0.2)[0]
    assert hung.hung and hung.status is None and hung.latency_s < 0.9
    refused = _run(lambda c: loadgen.sequential(c, f"http://127.0.0.1:{free_port()}/ok", 1))[0]
    assert refused.status is None and not refused.hung and refused.error.startswith("Client")
    assert loadgen.status_counts([hung, refused, Outcome(0, 0.1, 200)]) == {
        "200": 1, refused.error: 1, "timeout": 1,
    }  # fmt: skip


def test_closed_loop_pauses_after_a_refusal_only_when_asked(server: str) -> None:
    polite, elapsed = _run(lambda c: loadgen.closed_loop(c, f"{server}/busy", users=2, duration_s=0.3))
    assert len(polite) == 2 and elapsed >= 1.0  # each user: one 503, then its 1 s pause past the end
    flood, _ = _run(
        lambda c: loadgen.closed_loop(c, f"{server}/busy", users=2, duration_s=0.3, pause_after_refusal_s=0)
    )
    assert len(flood) > 4 and {o.status for o in flood} == {503}


def test_closed_loop_numbers_requests_across_users(server: str) -> None:
    outcomes, _ = _run(
        lambda c: loadgen.closed_loop(c, lambda i: f"{server}/ok?n={i}", users=3, duration_s=5, max_requests=12)
    )
    assert 12 <= len(outcomes) <= 14  # the cap is checked before each send; up to users-1 more in flight
    assert sorted(int(n) for n in _Handler.seen) == list(range(len(outcomes)))


def test_open_loop_keeps_its_rate_and_stops_when_told(server: str) -> None:
    outcomes = _run(lambda c: loadgen.open_loop(c, lambda i: f"{server}/ok?n={i}", rate=40, duration_s=0.25))
    assert len(outcomes) == 10 and sorted(_Handler.seen, key=int) == [str(i) for i in range(10)]
    assert outcomes[-1].sent_s == pytest.approx(9 / 40, abs=0.1)
    stopped = _run(
        lambda c: loadgen.open_loop(c, f"{server}/ok", rate=40, duration_s=1, stop=lambda done: len(done) >= 3)
    )
    assert 3 <= len(stopped) < 40


def test_bench_figures_from_the_generator(server: str) -> None:
    single = benchload.one_user(server, lambda i: f"/ok?n={i}", requests=5)
    assert (single.completed, single.failures) == (5, 0) and single.p50_ms > 0
    _Handler.seen = []
    loaded = benchload.saturate(server, lambda i: f"/ok?n={i}", concurrency=3, duration_s=0.4, warmup_s=0.2)
    assert loaded.failures == 0 and loaded.images_per_s == pytest.approx(loaded.completed / 0.4)
    assert len(set(_Handler.seen)) == len(_Handler.seen) > loaded.completed  # warm-up requests not counted
    with pytest.raises(DogboothError, match="no request completed"):
        benchload.saturate(server, lambda _: "/busy", concurrency=2, duration_s=0.2, warmup_s=0)
    with pytest.raises(DogboothError, match="load client failed"):
        benchload.one_user(f"http://127.0.0.1:{free_port()}", lambda _: "/ok", requests=2)
