"""The benchmark's HTTP load: closed-loop clients on keep-alive connections, as cheap as Python allows.

On a 2-core machine the load generator competes with the server for CPU, so it is plain threads
and `http.client` (no gevent, no Locust): a request costs the client well under a millisecond.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dogbooth.core.errors import DogboothError

PathFor = Callable[[int], str]  # request number -> path with query


@dataclass(frozen=True)
class LoadResult:
    images_per_s: float
    completed: int
    failures: int
    p50_ms: float


class _Client:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout_s
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def get(self, path: str) -> int:
        """Status code of GET `path`; reconnects once when the server closed the connection."""
        for attempt in (1, 2):
            try:
                self.conn.request("GET", path)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def one_user(base_url: str, path_for: PathFor, *, requests: int, timeout_s: float = 120) -> LoadResult:
    """Sequential requests from one client: the latency a lone user sees (p50 of `requests`)."""
    client = _Client(base_url, timeout_s)
    latencies, failures = [], 0
    started = time.perf_counter()
    try:
        for i in range(requests):
            t0 = time.perf_counter()
            status = client.get(path_for(i))
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1
    finally:
        client.close()
    if not latencies:
        raise DogboothError(f"{base_url}: every one of {requests} requests failed")
    elapsed = time.perf_counter() - started
    return LoadResult(len(latencies) / elapsed, len(latencies), failures, statistics.median(latencies) * 1000)


def saturate(
    base_url: str,
    path_for: PathFor,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float = 120,
) -> LoadResult:
    """`concurrency` closed-loop clients; images/s counted only in the window after `warmup_s`."""
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + duration_s)
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0, "next": 0}
    errors: list[BaseException] = []

    def worker() -> None:
        client = _Client(base_url, timeout_s)
        try:
            while time.perf_counter() < window[1]:
                with lock:
                    n = counts["next"]
                    counts["next"] += 1
                t0 = time.perf_counter()
                status = client.get(path_for(n))
                t1 = time.perf_counter()
                if window[0] <= t1 <= window[1]:
                    with lock:
                        counts["ok" if status == 200 else "failed"] += 1
                        if status == 200:
                            latencies.append(t1 - t0)
        except BaseException as e:  # reported below; a dead client must not pass silently
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + warmup_s + timeout_s + 10)
    if errors:
        raise DogboothError(f"{base_url}: load client failed: {errors[0]!r}")
    if not latencies:
        raise DogboothError(f"{base_url}: no request completed in the {duration_s:g}s window")
    return LoadResult(counts["ok"] / duration_s, counts["ok"], counts["failed"], statistics.median(latencies) * 1000)
