"""Auth: with an API key set, only requests carrying it reach the model, and the key never leaks.

The key is read by the replica from the Ray head's environment (`AppArgs.api_key_env`); clients
send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Health probes stay open so that
Kubernetes and load balancers need no secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("dogbooth.commands.reliability")

PROMPT = {"prompt": "a photo of a dog"}


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    expected: int
    json: dict[str, Any] | None = None


@dataclass
class AuthResult:
    checks: list[dict[str, Any]] = field(default_factory=list)  # name, expected, got, ok
    leaks: list[str] = field(default_factory=list)  # where the key showed up

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks) and not self.leaks

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def probes(key: str) -> list[Probe]:
    """What must be refused, what must pass, and what stays open."""
    wrong = key[::-1] if key[::-1] != key else key + "x"
    query = "/imagine?prompt=a+photo+of+a+dog"
    return [
        Probe("GET without a key", "GET", query, {}, 401),
        Probe("POST without a key", "POST", "/imagine", {}, 401, PROMPT),
        Probe("wrong Bearer key", "GET", query, {"Authorization": f"Bearer {wrong}"}, 401),
        Probe("wrong X-API-Key", "POST", "/imagine", {"X-API-Key": wrong}, 401, PROMPT),
        Probe("empty Bearer", "GET", query, {"Authorization": "Bearer "}, 401),
        Probe("key without the Bearer scheme", "GET", query, {"Authorization": key}, 401),
        Probe("key as a prefix only", "GET", query, {"X-API-Key": key[:-1]}, 401),
        Probe("right Bearer key (GET)", "GET", query, {"Authorization": f"Bearer {key}"}, 200),
        Probe("right Bearer key (POST)", "POST", "/imagine", {"Authorization": f"Bearer {key}"}, 200, PROMPT),
        Probe("right X-API-Key (GET)", "GET", query, {"X-API-Key": key}, 200),
        Probe("right X-API-Key (POST)", "POST", "/imagine", {"X-API-Key": key}, 200, PROMPT),
        Probe("invalid input with the key", "GET", "/imagine?prompt=dog&steps=0", {"X-API-Key": key}, 422),
        Probe("/healthz without a key", "GET", "/healthz", {}, 200),
        Probe("/readyz without a key", "GET", "/readyz", {}, 200),
    ]


def check_endpoints(base_url: str, key: str, *, timeout_s: float = 60) -> AuthResult:
    """Send every probe; each must get its expected status, and no answer may contain the key."""
    result = AuthResult()
    with requests.Session() as http:
        for probe in probes(key):
            try:
                r = http.request(probe.method, base_url + probe.path, headers=probe.headers, json=probe.json,
                                 timeout=timeout_s)  # fmt: skip
                got: int | str = r.status_code
                answer = r.content + repr(dict(r.headers)).encode()
            except requests.RequestException as e:
                got, answer = type(e).__name__, b""
            result.checks.append({"name": probe.name, "expected": probe.expected, "got": got,
                                  "ok": got == probe.expected})  # fmt: skip
            if key.encode() in answer:
                result.leaks.append(f"response to {probe.name!r}")
            if got == 401 and r.headers.get("www-authenticate", "").lower() != "bearer":
                result.checks.append({"name": f"{probe.name}: WWW-Authenticate", "expected": "Bearer",
                                      "got": r.headers.get("www-authenticate"), "ok": False})  # fmt: skip
    return result


def files_containing(secret: str, roots: Iterable[Path]) -> list[str]:
    """Every file under `roots` (recursively) whose bytes contain `secret`."""
    needle = secret.encode()
    found = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in paths:
            try:
                with path.open("rb") as f:
                    if _contains(f, needle):
                        found.append(str(path))
            except OSError:
                continue  # sockets, files removed while we walk
    return found


def _contains(f: Any, needle: bytes, chunk: int = 1 << 20) -> bool:
    tail = b""
    while block := f.read(chunk):
        if needle in tail + block:
            return True
        tail = block[-len(needle) :]
    return False


def check(base_url: str, key: str, log_roots: Iterable[Path]) -> AuthResult:
    """The endpoint probes, then a scan of the logs for the key."""
    result = check_endpoints(base_url, key)
    roots = [r for r in log_roots if r.exists()]
    result.leaks += [f"log file {p}" for p in files_containing(key, roots)]
    passed = sum(c["ok"] for c in result.checks)
    log.info("auth: %d/%d probes as expected, %d leak(s)", passed, len(result.checks), len(result.leaks))
    return result
