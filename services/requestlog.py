"""One JSON line per `/imagine` request, written by the replica that answered it (docs/observability.md).

The line carries the request id that Serve's proxy assigns (the `X-Request-ID` it also returns to
the client), the status, where the time went (queue wait, generate, encode), the batch the request
joined and the adapter. It never carries the API key (no header is logged) nor the prompt: only
its length and a short SHA-256, enough to see that two requests asked the same thing.

The lines go to their own file in Ray's Serve log directory, next to Serve's replica logs, so
Ray's log tooling (`ray logs`, the dashboard) lists them and no other output interleaves:
`<ray temp dir>/session_latest/logs/serve/dogbooth_requests_<replica>.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_PREFIX = "dogbooth_requests_"
FILE_SUFFIX = ".jsonl"
GONE = 499  # the status logged when the caller went away: Serve's timeout (the proxy sent 408) or a disconnect
ROTATE_BYTES, ROTATE_KEEP = 64 * 2**20, 4  # ~200 bytes a line: ~300k requests a file


def prompt_digest(text: str) -> str:
    """16 hex digits of SHA-256: equal prompts match across lines; the text itself is never written."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Trace:
    """What one request's line says, filled in as the request goes through the replica."""

    request_id: str
    method: str
    prompt: str = field(repr=False)  # only its length and digest leave this object
    started: float = field(default_factory=time.monotonic)
    adapter: str | None = None
    shape: str | None = None  # steps x guidance x width x height once the request is resolved
    format: str | None = None
    admission: str | None = None  # services/metrics.py ADMITTED or REFUSED; None: it never got that far
    batch_id: int | None = None
    batch_size: int | None = None
    queue_wait_s: float | None = None
    generate_s: float | None = None
    encode_s: float | None = None

    def fields(self, status: int) -> dict[str, Any]:
        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 2)

        return {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "method": self.method,
            "status": status,
            "adapter": self.adapter,
            "prompt_chars": len(self.prompt),
            "prompt_sha256": prompt_digest(self.prompt),
            "shape": self.shape,
            "format": self.format,
            "admission": self.admission,
            "batch_id": self.batch_id,
            "batch_size": self.batch_size,
            "queue_wait_ms": ms(self.queue_wait_s),
            "generate_ms": ms(self.generate_s),
            "encode_ms": ms(self.encode_s),
            "total_ms": ms(time.monotonic() - self.started),
        }


class RequestLog:
    """Appends one JSON object per request to `<directory>/dogbooth_requests_<replica>.jsonl`."""

    def __init__(self, directory: Path, replica: str, model: str) -> None:
        self.path = directory / f"{FILE_PREFIX}{replica}{FILE_SUFFIX}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.context = {"replica": replica, "model": model}
        self.logger = logging.getLogger(f"dogbooth.requests.{replica}")
        self.logger.propagate = False  # Serve's replica log has its own format; these lines are pure JSON
        self.logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for old in self.logger.handlers:  # a reload in the same process: one handler, no leaked file
            old.close()
        self.logger.handlers[:] = [handler]

    def write(self, trace: Trace, status: int) -> None:
        self.logger.info(json.dumps({**trace.fields(status), **self.context}, separators=(",", ":")))
