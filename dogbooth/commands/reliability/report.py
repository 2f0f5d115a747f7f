"""The reliability summary: the figures, the goals they are held to, and the files a reviewer opens.

`summary.json` has the issue's keys at the top level plus `goals` (name -> met) and `details`
(each phase's full result); `summary.md` is the same as a table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = (
    "fuzz_cases", "fuzz_5xx", "overload_rejected", "overload_reject_p99_ms", "overload_accepted_p99_ms",
    "unloaded_p50_ms", "overload_hung", "kill_recovery_s", "kill_failed_requests", "kill_hung",
    "train_resume_ok", "auth_ok",
)  # fmt: skip
PHASES = ("fuzz", "overload", "kill", "train", "auth")


@dataclass(frozen=True)
class Goal:
    name: str  # what is promised, as a user would read it
    phase: str
    check: Callable[[dict[str, Any]], bool]


def goals(min_fuzz_cases: int = 1000) -> list[Goal]:
    """The issue's goals, plus the conditions without which a figure would mean nothing."""
    return [
        Goal(f"fuzz_cases >= {min_fuzz_cases}", "fuzz", lambda s: s["fuzz_cases"] >= min_fuzz_cases),
        Goal("fuzz_5xx == 0", "fuzz", lambda s: s["fuzz_5xx"] == 0),
        Goal("every fuzzed request answered", "fuzz", lambda s: s["details"]["fuzz"]["no_answer"] == 0),
        Goal("a normal request succeeds after fuzzing", "fuzz", lambda s: s["details"]["fuzz"]["after_ok"]),
        Goal("overload_rejected > 0 (beyond capacity)", "overload", lambda s: s["overload_rejected"] > 0),
        Goal("overload_reject_p99_ms < 100", "overload", lambda s: _lt(s["overload_reject_p99_ms"], 100)),
        Goal("overload_hung == 0", "overload", lambda s: s["overload_hung"] == 0),
        Goal("overload_accepted_p99_ms <= 3 * unloaded_p50_ms", "overload",
             lambda s: _lt(s["overload_accepted_p99_ms"], 3 * s["unloaded_p50_ms"], inclusive=True)),
        Goal("overload: every answer is 200 or 503", "overload",
             lambda s: set(s["details"]["overload"]["statuses"]) <= {"200", "503"}),
        Goal("overload: answers right after", "overload", lambda s: s["details"]["overload"]["recovered"]),
        Goal("kill_recovery_s < 30", "kill", lambda s: _lt(s["kill_recovery_s"], 30)),
        Goal("kill_hung == 0", "kill", lambda s: s["kill_hung"] == 0),
        Goal("train_resume_ok", "train", lambda s: s["train_resume_ok"] is True),
        Goal("auth_ok", "auth", lambda s: s["auth_ok"] is True),
    ]  # fmt: skip


def _lt(value: float | None, bound: float, *, inclusive: bool = False) -> bool:
    if value is None or math.isnan(value):
        return False
    return value <= bound if inclusive else value < bound


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def summarize(details: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The top-level figures from each phase's result dict (a phase not run gives nulls)."""
    f, o = details.get("fuzz", {}), details.get("overload", {})
    k, t, a = details.get("kill", {}), details.get("train", {}), details.get("auth", {})
    figures = {
        "fuzz_cases": f.get("cases"), "fuzz_5xx": f.get("server_error_count"),
        "overload_rejected": o.get("rejected"), "overload_reject_p99_ms": o.get("reject_p99_ms"),
        "overload_accepted_p99_ms": o.get("accepted_p99_ms"), "unloaded_p50_ms": o.get("unloaded_p50_ms"),
        "overload_hung": o.get("hung"),
        "kill_recovery_s": k.get("recovery_s"), "kill_failed_requests": k.get("failed"),
        "kill_hung": k.get("hung"),
        "train_resume_ok": t.get("ok"), "auth_ok": a.get("ok"),
    }  # fmt: skip
    return _clean({**figures, "details": details})


def evaluate(summary: dict[str, Any], checks: list[Goal]) -> dict[str, bool | None]:
    """{goal: met}; None for the goals of phases that were not run."""
    ran = set(summary["details"])
    result: dict[str, bool | None] = {}
    for goal in checks:
        if goal.phase not in ran:
            result[goal.name] = None
            continue
        try:
            result[goal.name] = bool(goal.check(summary))
        except (KeyError, TypeError):  # a figure missing because its phase broke
            result[goal.name] = False
    return result


def failed(met: dict[str, bool | None]) -> list[str]:
    return [name for name, ok in met.items() if ok is False]


def write(report_dir: Path, summary: dict[str, Any], met: dict[str, bool | None], meta: dict[str, Any]) -> Path:
    """Write summary.json and summary.md (via temp files, so a reader never sees half of one)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    data = {**{key: summary[key] for key in KEYS}, "goals": met, "failed_goals": failed(met), **meta,
            "details": summary["details"]}  # fmt: skip
    for name, text in (("summary.json", json.dumps(data, indent=2) + "\n"), ("summary.md", markdown(data))):
        tmp = report_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(report_dir / name)
    return report_dir / "summary.json"


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "**FAILED**", None: "not run"}[ok]


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Reliability summary ({data.get('profile', '?')}, revision {data.get('git_rev', '?')})", "",
        "| figure | value |", "|---|---|",
        *(f"| `{key}` | {data[key]} |" for key in KEYS), "",
        "| goal | result |", "|---|---|",
        *(f"| {name} | {_mark(ok)} |" for name, ok in data["goals"].items()), "",
    ]  # fmt: skip
    d = data["details"]
    lines += [f"{phase} could not run: {r['error']}" for phase, r in d.items() if "error" in r]
    d = {phase: r for phase, r in d.items() if "error" not in r}
    if "overload" in d:
        o = d["overload"]
        lines.append(f"Overload: capacity {o['capacity_rps']} req/s, offered {o['offered_rps']} req/s for "
                     f"{o['duration_s']} s; {o['sent']} sent, statuses {o['statuses']}; accepted p50 "
                     f"{o['accepted_p50_ms']} ms.")  # fmt: skip
    if "kill" in d:
        k = d["kill"]
        lines.append(f"Replica kill: pid {k['killed_pid']} at {k['rate_rps']} req/s; new replica "
                     f"{k['new_pids']}; answers after the kill {k['statuses_after_kill']}.")  # fmt: skip
    if "fuzz" in d:
        f = d["fuzz"]
        lines.append(f"Fuzz: {f['cases']} cases in {f['seconds']} s, statuses {f['statuses']}.")
    if "train" in d:
        t = d["train"]
        lines.append(f"Training: killed after checkpoint {t['killed_after_step']} (complete: "
                     f"{t['checkpoints_at_kill']}), resumed from {t['resumed_from']}, ended at step "
                     f"{t['final_step']} of {t['steps_requested']}.")  # fmt: skip
    problems = [p for p in d.get("train", {}).get("problems", [])] + d.get("auth", {}).get("leaks", [])
    if problems:
        lines += ["", "Problems:", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"
