"""Where a lone request's served latency goes, for `python -m dogbooth bench` (docs/performance.md).

Three sources, each measured where it happens:
  the client: the served p50 of one user's sequential requests, and `/healthz` through the same proxy
    and replica (an HTTP round trip with no model);
  the replica: its request log (services/requestlog.py, one JSON line per request) gives each
    request's queue wait (the batcher's wait timeout included), generate, encode and time in the
    handler;
  the bench process: dogbooth's generate path and the plain pipeline call, back to back (benchraw.phases).
Each part is a median on its own. Two are what is left over: `handler_other_ms` is the replica's time
in the handler less its queue, generate and encode (parsing, admission, the response), and `http_ms`
the client's p50 less the replica's (the client, Serve's proxy and the hops between them).
"""

from __future__ import annotations

import contextlib
import json
import statistics
from pathlib import Path
from typing import Any

from services.requestlog import FILE_PREFIX, FILE_SUFFIX


def log_dir(ray_temp_dir: str) -> Path:
    return Path(ray_temp_dir) / "session_latest" / "logs" / "serve"


def read_lines(directory: Path) -> list[dict[str, Any]]:
    """Every replica's request-log lines, oldest first (timestamps are ISO, so they sort as text)."""
    lines = []
    for path in sorted(directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
        for text in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line still being written
                lines.append(json.loads(text))
    return sorted(lines, key=lambda line: str(line.get("ts")))


def _p50(lines: list[dict[str, Any]], key: str) -> float | None:
    values = [line[key] for line in lines if isinstance(line.get(key), int | float)]
    return round(statistics.median(values), 1) if values else None


def breakdown(
    served_p50_ms: float, http_only_p50_ms: float, replica: list[dict[str, Any]], phases: dict[str, float],
    batch_wait_timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """The parts (ms) of a lone request; `replica` are its request-log lines (status 200)."""
    batch_wait_ms = batch_wait_timeout_s * 1000
    queue_and_batch = _p50(replica, "queue_wait_ms")
    in_replica = _p50(replica, "total_ms")
    parts: dict[str, Any] = {
        "served_p50_ms": round(served_p50_ms, 1),
        # A lone request has nothing ahead of it: the wait is the batcher's timeout plus the hop to its worker.
        "queue_wait_ms": round(max(0.0, queue_and_batch - batch_wait_ms), 1) if queue_and_batch is not None else None,
        "batch_wait_ms": round(min(batch_wait_ms, queue_and_batch), 1) if queue_and_batch is not None else None,
        "generate_ms": _p50(replica, "generate_ms"),
        "encode_ms": _p50(replica, "encode_ms"),
        "handler_other_ms": None,
        "http_ms": round(served_p50_ms - in_replica, 1) if in_replica is not None else None,
        "replica_total_ms": in_replica,
        "healthz_round_trip_ms": round(http_only_p50_ms, 1),
        "requests_in_log": len(replica),
        # The same work in the bench process: does the replica's process slow the model down?
        "bench_process_generate_ms": round(phases["generate_and_encode_ms"] - phases["encode_ms"], 1),
        "bench_process_plain_pipeline_ms": phases["plain_pipeline_ms"],
    }
    known = [parts[k] for k in ("queue_wait_ms", "batch_wait_ms", "generate_ms", "encode_ms")]
    if in_replica is not None and None not in known:
        parts["handler_other_ms"] = round(in_replica - sum(known), 1)
    # Serving's own cost, from one moment's figures: the client's p50 less the replica's model time. The
    # issue's p50_overhead_ms subtracts a raw p50 taken minutes earlier, so machine load moves it.
    generate = parts["generate_ms"]
    parts["serving_overhead_ms"] = round(served_p50_ms - generate, 1) if generate is not None else None
    return parts
