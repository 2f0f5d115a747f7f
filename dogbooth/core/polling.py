"""Bounded waiting: call a check until it answers, and say what is stuck when it never does."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from dogbooth.core.errors import BringUpError

log = logging.getLogger("dogbooth.poll")
T = TypeVar("T")


def poll(
    what: str,
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 5,
    on_timeout: Callable[[], str] = lambda: "",
    error: Callable[[str], Exception] = BringUpError,
) -> T:
    """Call `check` until it returns something other than None; `error` (BringUpError unless the caller
    names its own kind, e.g. a training or pipeline error) after `timeout_s`.

    `check` may raise to fail at once, for states that cannot turn good (a failed deploy, an exited
    process); it may also report progress as it goes."""
    deadline = time.monotonic() + timeout_s
    last_note = 0.0
    while True:
        result = check()
        if result is not None:
            return result
        now = time.monotonic()
        if now >= deadline:
            detail = on_timeout()
            raise error(f"timed out after {timeout_s:.0f}s waiting for {what}" + (f":\n{detail}" if detail else ""))
        if now - last_note > 60:
            log.info("waiting for %s (%.0fs left)", what, deadline - now)
            last_note = now
        time.sleep(max(0.0, min(interval_s, deadline - now)))
