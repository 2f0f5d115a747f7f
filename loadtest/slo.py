"""The SLO gate: per-profile p95 latency and error-rate budgets from `loadtest/slo.yaml`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogbooth.core.errors import DogboothError
from dogbooth.core.yamlfile import read_mapping

SLO_FILE = Path(__file__).resolve().parent / "slo.yaml"
DEFAULT_KEY = "default"


class SLOError(DogboothError):
    """The SLO file is unreadable or invalid; names the file and key."""


class SLOViolation(DogboothError):
    """The run missed at least one objective; the message is the violated line(s)."""


@dataclass(frozen=True)
class SLO:
    p95_ms: float
    error_rate: float
    source: str  # "loadtest/slo.yaml: local", or "--slo-p95-ms" for an override

    def check(self, summary: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(all lines, violated lines), each naming the objective, the measurement and the source."""
        lines: list[str] = []
        violated: list[str] = []
        if summary["requests"] == 0:
            violated.append(f"VIOLATED: no request completed in the run ({self.source})")
            lines.append(violated[0])
        for key, measured, limit, unit in (
            ("p95_ms", summary["p95_ms"], self.p95_ms, " ms"),
            ("error_rate", summary["error_rate"], self.error_rate, ""),
        ):
            ok = measured <= limit
            line = f"{'ok' if ok else 'VIOLATED'}: {key} {measured:g}{unit} <= {limit:g}{unit} ({self.source})"
            lines.append(line)
            if not ok:
                violated.append(line)
        return lines, violated


def _number(entry: dict[str, Any], key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SLOError(f"{where}.{key}: expected a number >= 0, got {value!r}")
    return float(value)


def load(keys: list[str], path: Path = SLO_FILE) -> SLO:
    """The SLO of the first of `keys` (profile name, then platform) in the file, else its `default`."""
    data = read_mapping(path, SLOError, expected="a mapping of profile name to {p95_ms, error_rate}")
    key = next((k for k in keys if k in data), DEFAULT_KEY)
    entry = data.get(key)
    if not isinstance(entry, dict):
        raise SLOError(f"{path}: no entry for {' or '.join(keys) or 'this run'} and no {DEFAULT_KEY!r} entry")
    unknown = set(entry) - {"p95_ms", "error_rate"}
    if unknown:
        raise SLOError(f"{path}: {key}: unknown key(s) {', '.join(sorted(unknown))}; use p95_ms, error_rate")
    where = f"{path}: {key}"
    return SLO(_number(entry, "p95_ms", where), _number(entry, "error_rate", where), where)


def with_overrides(slo: SLO, *, p95_ms: float | None = None, error_rate: float | None = None) -> SLO:
    """Command-line overrides win over the file; the source says which flag set the budget."""
    if p95_ms is None and error_rate is None:
        return slo
    flags = [name for name, v in (("--slo-p95-ms", p95_ms), ("--slo-error-rate", error_rate)) if v is not None]
    return SLO(
        p95_ms if p95_ms is not None else slo.p95_ms,
        error_rate if error_rate is not None else slo.error_rate,
        f"{slo.source} with {', '.join(flags)}",
    )
