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
    "train_resume_ok", "auth_ok", "openapi_cases", "openapi_failures", "update_under_load_failures",
    "soak_s", "soak_rss_growth_pct", "soak_p99_drift", "soak_5xx", "exposed_unauthenticated_ports",
)  # fmt: skip
PHASES = ("exposure", "auth", "fuzz", "openapi", "overload", "kill", "soak", "updates", "train")


@dataclass(frozen=True)
class Goal:
    name: str  # what is promised, as a user would read it
    phase: str
    check: Callable[[dict[str, Any]], bool]


def goals(min_fuzz_cases: int = 1000, min_openapi_cases: int = 500) -> list[Goal]:
    """The issue's goals, plus the conditions without which a figure would mean nothing."""
    return [*_serving_goals(min_fuzz_cases), *_day2_goals(min_openapi_cases)]


def _day2_goals(min_openapi_cases: int) -> list[Goal]:
    """Contract, updates, soak and exposure (issue 14)."""
    return [
        Goal(f"openapi_cases >= {min_openapi_cases}", "openapi", lambda s: s["openapi_cases"] >= min_openapi_cases),
        Goal("openapi_failures == 0", "openapi", lambda s: s["openapi_failures"] == 0),
        Goal("openapi: the key got through (images served)", "openapi",
             lambda s: s["details"]["openapi"]["images_served"] > 0),
        Goal("update_under_load_failures == 0", "updates", lambda s: s["update_under_load_failures"] == 0),
        Goal("updates: two code revisions and one model deployed", "updates",
             lambda s: len(s["details"]["updates"]["updates"]) == 3),
        Goal("soak_rss_growth_pct <= 5", "soak", lambda s: _lt(s["soak_rss_growth_pct"], 5, inclusive=True)),
        Goal("soak_p99_drift <= 1.25", "soak", lambda s: _lt(s["soak_p99_drift"], 1.25, inclusive=True)),
        Goal("soak_5xx == 0", "soak", lambda s: s["soak_5xx"] == 0),
        Goal("soak: nothing hung", "soak", lambda s: s["details"]["soak"]["hung"] == 0),
        Goal("exposed_unauthenticated_ports == 0", "exposure", lambda s: s["exposed_unauthenticated_ports"] == 0),
    ]  # fmt: skip


def _serving_goals(min_fuzz_cases: int) -> list[Goal]:
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
    oa, up, so = details.get("openapi", {}), details.get("updates", {}), details.get("soak", {})
    figures = {
        "fuzz_cases": f.get("cases"), "fuzz_5xx": f.get("server_error_count"),
        "overload_rejected": o.get("rejected"), "overload_reject_p99_ms": o.get("reject_p99_ms"),
        "overload_accepted_p99_ms": o.get("accepted_p99_ms"), "unloaded_p50_ms": o.get("unloaded_p50_ms"),
        "overload_hung": o.get("hung"),
        "kill_recovery_s": k.get("recovery_s"), "kill_failed_requests": k.get("failed"),
        "kill_hung": k.get("hung"),
        "train_resume_ok": t.get("ok"), "auth_ok": a.get("ok"),
        "openapi_cases": oa.get("cases"), "openapi_failures": oa.get("total_failures"),
        "update_under_load_failures": up.get("failed"),
        "soak_s": so.get("duration_s"), "soak_rss_growth_pct": so.get("rss_growth_pct"),
        "soak_p99_drift": so.get("p99_drift"), "soak_5xx": so.get("server_errors"),
        "exposed_unauthenticated_ports": details.get("exposure", {}).get("exposed_unauthenticated_ports"),
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
    lines += _day2_lines(d)
    problems = [p for p in d.get("train", {}).get("problems", [])] + d.get("auth", {}).get("leaks", [])
    if problems:
        lines += ["", "Problems:", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


def _day2_lines(d: dict[str, Any]) -> list[str]:
    lines = []
    if "openapi" in d:
        o = d["openapi"]
        lines.append(f"OpenAPI (schemathesis, all checks): {o['cases']} cases over {o['operations']} operations in "
                     f"{o['seconds']} s, {o['failures']} with failures, {o['errors']} errors, "
                     f"{o['images_served']} images served.")  # fmt: skip
        lines += [f"- {f.get('operation')}: {f.get('title')}" for f in o.get("failed_checks", [])]
    if "updates" in d:
        u = d["updates"]
        steps = "; ".join(f"{x['what']} at {x['at_s']} s ({x['seconds']} s)" for x in u["updates"])
        lines.append(f"Updates under load at {u['rate_rps']} req/s: {steps}. {u['sent']} sent, statuses "
                     f"{u['statuses']}, answered by {u['answered_by']}.")  # fmt: skip
    if "soak" in d:
        k = d["soak"]
        lines.append(f"Soak: {k['rate_rps']} req/s for {k['duration_s']} s (windows {k['window_s']} s); RSS "
                     f"{k['rss_first_mb']} -> {k['rss_end_mb']} MB; p99 {k['p99_first_ms']} -> {k['p99_last_ms']} "
                     f"ms; statuses {k['statuses']}; replica pids {k['replica_pids']}.")  # fmt: skip
    if "exposure" in d:
        e = d["exposure"]
        lines.append(f"Exposure: {e['listeners']} listening sockets, {len(e['bound_beyond_loopback'])} bound beyond "
                     f"loopback; probed from {e['addresses'] or 'no address'}: {len(e['ports'])} reachable, "
                     f"{len(e['exposed'])} exposed. {e['note']}")  # fmt: skip
        lines += [f"- exposed: {x['address']}:{x['port']} {x['processes']}: {x['answer']}" for x in e["exposed"]]
    return lines
