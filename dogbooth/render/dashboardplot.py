"""Pictures of the shipped Grafana dashboards without a Grafana: their PromQL over a recorded scrape.

docs/observability.md shows each dashboard; no cluster and no Grafana run where the docs are
written, so `plot` evaluates every panel's queries over a recording of the local stack's exporters
(a list of timed scrapes) and draws the panels where the dashboard's grid puts them. It is a
rendering of the dashboard's queries, not a Grafana screenshot: styling differs, and the evaluator
covers the PromQL the shipped dashboards use (selectors with matchers, rate/irate/increase,
sum/avg/min/max/count by, histogram_quantile, vector, arithmetic, `on()`, `or`), nothing more.

Values follow Prometheus where it matters for the picture: a selector takes each series' latest
sample within 5 minutes, rate() is (last - first) / span over the window with counter resets
handled (no extrapolation), histogram_quantile interpolates linearly inside the bucket.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dogbooth.render.dashboards import DASHBOARDS_DIR
from dogbooth.render.promql import tokenize

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
_LOOKBACK_S = 300.0
_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "avg": lambda v: sum(v) / len(v),
    "min": min,
    "max": max,
    "count": lambda v: float(len(v)),
}
_BINARY = [("or",), ("and", "unless"), ("==", "!=", ">", "<", ">=", "<="), ("+", "-"), ("*", "/", "%")]


@dataclass(frozen=True)
class Recording:
    """Timed scrapes: times[i] holds series -> value as the exporters answered at that moment."""

    times: list[float]
    scrapes: list[dict[str, dict[Labels, float]]]

    @classmethod
    def load(cls, path: Path) -> Recording:
        rows = json.loads(gzip.decompress(path.read_bytes()))
        scrapes = []
        for row in rows:
            by_name: dict[str, dict[Labels, float]] = defaultdict(dict)
            for name, labels, value in row["samples"]:
                by_name[name][frozenset(labels.items())] = value
            scrapes.append(dict(by_name))
        return cls([row["t"] for row in rows], scrapes)

    def names(self) -> list[str]:
        return sorted({name for scrape in self.scrapes for name in scrape})

    def series(self, name: str, t: float, window: float) -> dict[Labels, list[tuple[float, float]]]:
        out: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for when, scrape in zip(self.times, self.scrapes, strict=True):
            if t - window < when <= t:
                for labels, value in scrape.get(name, {}).items():
                    out[labels].append((when, value))
        return out


class _Parser:
    """Recursive descent over promql.tokens, evaluating at one instant `t`."""

    def __init__(self, expr: str, rec: Recording, t: float, variables: dict[str, str]) -> None:
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), ".*"), expr)
        self.tokens, self.i, self.rec, self.t = tokenize(text), 0, rec, t

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.tokens[j][1] if j < len(self.tokens) else ""

    def take(self, value: str | None = None) -> str:
        got = self.peek()
        if value is not None and got != value:
            raise ValueError(f"expected {value!r}, got {got!r}")
        self.i += 1
        return got

    def expr(self, level: int = 0) -> Vector | float:
        if level == len(_BINARY):
            return self.unary()
        left = self.expr(level + 1)
        while self.peek() in _BINARY[level]:
            op = self.take()
            on = self.matching()
            right = self.expr(level + 1)
            left = _binary(op, left, right, on)
        return left

    def matching(self) -> list[str] | None:
        if self.peek() not in ("on", "ignoring"):
            return None
        if self.take() == "ignoring":
            raise ValueError("ignoring() is not supported")
        labels = self.label_list()
        if self.peek() in ("group_left", "group_right"):
            self.take()
            if self.peek() == "(":
                self.label_list()
        return labels

    def label_list(self) -> list[str]:
        self.take("(")
        labels = []
        while self.peek() != ")":
            labels.append(self.take())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return labels

    def unary(self) -> Vector | float:
        if self.peek() == "-":
            self.take()
            value = self.unary()
            return -value if isinstance(value, float) else {k: -v for k, v in value.items()}
        return self.primary()

    def primary(self) -> Vector | float:
        kind, value = self.tokens[self.i]
        if value == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "number":
            self.take()
            return float(value)
        if value in _AGGREGATIONS:
            return self.aggregation()
        if self.peek(1) == "(":
            return self.function()
        return self.selector()

    def aggregation(self) -> Vector:
        op, by = self.take(), None
        if self.peek() in ("by", "without"):
            if self.take() == "without":
                raise ValueError("without() is not supported")
            by = self.label_list()
        self.take("(")
        inner = self.expr()
        self.take(")")
        if self.peek() == "by":
            self.take()
            by = self.label_list()
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, v in _vector(inner).items():
            groups[frozenset((k, x) for k, x in labels if by is not None and k in by)].append(v)
        return {k: _AGGREGATIONS[op](v) for k, v in groups.items()}

    def function(self) -> Vector | float:
        name = self.take()
        self.take("(")
        if name in ("rate", "irate", "increase"):
            series, window = self.range_selector()
            self.take(")")
            return {k: r for k, s in series.items() if (r := _rate(s, window, name)) is not None}
        args = [self.expr()]
        while self.peek() == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        if name == "histogram_quantile" and isinstance(args[0], float):
            return _quantile(args[0], _vector(args[1]))
        if name == "vector" and isinstance(args[0], float):
            return {frozenset(): args[0]}
        raise ValueError(f"function {name} is not supported")

    def matchers(self) -> list[tuple[str, str, str]]:
        found = []
        if self.peek() == "{":
            self.take()
            while self.peek() != "}":
                label, op, value = self.take(), self.take(), self.take()
                found.append((label, op, json.loads(value) if value.startswith('"') else value[1:-1]))
                if self.peek() == ",":
                    self.take()
            self.take("}")
        return found

    def select(self, window: float) -> dict[Labels, list[tuple[float, float]]]:
        """`name{matchers}` or `{__name__=~"...", ...}`: the matching series' samples within `window`."""
        name = self.take() if self.peek() != "{" else None
        matchers = self.matchers()
        by_name = [m for m in matchers if m[0] == "__name__"]
        names = [name] if name else [n for n in self.rec.names() if _matches(frozenset({("__name__", n)}), by_name)]
        found: dict[Labels, list[tuple[float, float]]] = {}
        for n in names:
            series = self.rec.series(n, self.t, window)
            found.update((k, v) for k, v in series.items() if _matches(k, [m for m in matchers if m not in by_name]))
        return found

    def range_selector(self) -> tuple[dict[Labels, list[tuple[float, float]]], float]:
        start = self.i
        while self.peek() != "[":  # the window comes after the selector: read it first
            self.i += 1
        window = _seconds(self.peek(1))
        end, self.i = self.i, start
        series = self.select(window)
        if self.i != end:
            raise ValueError(f"unread {self.peek()!r} before the range")
        self.take("[")
        self.take()
        self.take("]")
        return series, window

    def selector(self) -> Vector:
        return {k: v[-1][1] for k, v in self.select(_LOOKBACK_S).items()}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration))


def _matches(labels: Labels, matchers: list[tuple[str, str, str]]) -> bool:
    have = dict(labels)
    for label, op, value in matchers:
        got = have.get(label, "")
        ok = {"=": got == value, "!=": got != value}.get(op)
        if ok is None:
            ok = bool(re.fullmatch(value, got)) == (op == "=~")
        if not ok:
            return False
    return True


def _vector(value: Vector | float) -> Vector:
    return {frozenset(): value} if isinstance(value, float) else value


def _rate(samples: list[tuple[float, float]], window: float, fn: str) -> float | None:
    if len(samples) < 2:
        return None
    if fn == "irate":
        samples = samples[-2:]
    growth = sum(b - a if b >= a else b for (_, a), (_, b) in zip(samples, samples[1:], strict=False))
    span = samples[-1][0] - samples[0][0]
    if span <= 0:
        return None
    return growth / span * (window if fn == "increase" else 1.0)


def _quantile(q: float, buckets: Vector) -> Vector:
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, count in buckets.items():
        le = dict(labels).get("le")
        if le is not None:
            groups[frozenset(x for x in labels if x[0] != "le")].append((float(le), count))
    out: Vector = {}
    for labels, points in groups.items():
        points.sort()
        total = points[-1][1]
        if total <= 0 or not math.isinf(points[-1][0]):
            continue
        rank, lower_bound, lower_count = q * total, 0.0, 0.0
        for bound, count in points:
            if count >= rank:
                if math.isinf(bound):
                    out[labels] = lower_bound
                else:
                    width = count - lower_count
                    out[labels] = lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1)
                break
            lower_bound, lower_count = bound, count
    return out


def _binary(op: str, left: Vector | float, right: Vector | float, on: list[str] | None) -> Vector | float:
    if isinstance(left, float) and isinstance(right, float):
        return _apply(op, left, right)
    if op == "or":
        lv, rv = _vector(left), _vector(right)
        return {**rv, **lv} if lv else rv
    key: Callable[[Labels], Labels] = (
        (lambda k: frozenset(x for x in k if x[0] in on)) if on is not None else (lambda k: k)
    )
    if isinstance(right, float):
        return {k: r for k, v in _vector(left).items() if (r := _apply(op, v, right)) is not None}
    if isinstance(left, float):
        return {k: r for k, v in right.items() if (r := _apply(op, left, v)) is not None}
    by_key = {key(k): v for k, v in right.items()}
    return {k: r for k, v in left.items() if key(k) in by_key and (r := _apply(op, v, by_key[key(k)])) is not None}


def _apply(op: str, a: float, b: float) -> float:
    if op == "/":
        return a / b if b else math.nan
    ops: dict[str, Callable[[float, float], float]] = {"+": lambda x, y: x + y, "-": lambda x, y: x - y,
                                                     "*": lambda x, y: x * y, "%": math.fmod}  # fmt: skip
    if op in ops:
        return ops[op](a, b)
    raise ValueError(f"operator {op} is not supported")


def evaluate(expr: str, rec: Recording, t: float, variables: dict[str, str] | None = None) -> Vector:
    """`expr` at time `t` of the recording, as an instant vector (a scalar becomes one series)."""
    parser = _Parser(expr, rec, t, {"__rate_interval": "1m", **(variables or {})})
    value = parser.expr()
    if parser.i != len(parser.tokens):
        raise ValueError(f"unread {parser.peek()!r} in {expr!r}")
    return _vector(value)


def _legend(template: str, labels: Labels) -> str:
    have = dict(labels)
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: have.get(m.group(1), ""), template or "")
    return text.strip() or ",".join(f"{k}={v}" for k, v in sorted(have.items())) or "value"


def panel_series(panel: dict[str, Any], rec: Recording) -> dict[str, list[tuple[float, float]]]:
    """Legend -> (seconds since the recording's start, value) for every series of every query of `panel`.

    One line per series, as Grafana draws them: where a legend template gives two series the same
    text, their label values tell them apart."""
    lines: dict[tuple[int, Labels], list[tuple[float, float]]] = defaultdict(list)
    for n, target in enumerate(panel.get("targets", [])):
        for t in rec.times:
            for labels, value in evaluate(target["expr"], rec, t).items():
                if math.isfinite(value):
                    lines[(n, labels)].append((t - rec.times[0], value))
    targets = panel.get("targets", [])
    names = {key: _legend(targets[key[0]].get("legendFormat", ""), key[1]) for key in lines}
    out = {}
    for key, points in lines.items():
        clash = sum(1 for other in names.values() if other == names[key]) > 1
        label = f"{names[key]} ({','.join(v for _k, v in sorted(key[1]))})" if clash else names[key]
        out[label] = points
    return out


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Where Grafana draws each panel: gridPos with overlaps pushed down, as its grid compacts them
    (Ray's dashboards give y as a row index and leave the rest to that)."""
    tops = [0] * 24
    placed: dict[int, dict[str, int]] = {}
    for i in sorted(range(len(panels)), key=lambda i: (panels[i]["gridPos"]["y"], panels[i]["gridPos"]["x"])):
        g = dict(panels[i]["gridPos"])
        g["y"] = max([g["y"], *tops[g["x"] : g["x"] + g["w"]]])
        tops[g["x"] : g["x"] + g["w"]] = [g["y"] + g["h"]] * g["w"]
        placed[i] = g
    return [placed[i] for i in range(len(panels))]


def plot(dashboard: dict[str, Any], rec: Recording, out: Path, caption: str) -> list[str]:
    """Draw every panel of `dashboard` where its gridPos puts it; returns the panels with no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in dashboard["panels"] if p.get("targets")]
    places = _layout(panels)
    bottom = max(g["y"] + g["h"] for g in places)
    width_in, row_in = 16.0, 0.45  # a Grafana grid unit: 1/24 of the width, and one row
    fig = plt.figure(figsize=(width_in, bottom * row_in + 0.6))
    height_in = bottom * row_in + 0.6
    empty = []
    for panel in panels:
        g = places[panels.index(panel)]
        left, right = g["x"] / 24 + 0.6 / width_in, (g["x"] + g["w"]) / 24 - 0.15 / width_in
        top, low = (
            1 - (0.6 + g["y"] * row_in + 0.3) / height_in,
            1 - (0.6 + (g["y"] + g["h"]) * row_in - 0.5) / height_in,
        )
        ax = fig.add_axes((left, low, right - left, top - low))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s into the recording", fontsize=7)
        series = panel_series(panel, rec)
        for legend, points in sorted(series.items())[:8]:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=legend[:40], linewidth=1.2)
        if series:
            ax.legend(fontsize=6, loc="upper left")
        else:
            empty.append(panel["title"])
            ax.text(
                0.5, 0.5, "no data in the recording", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
    fig.suptitle(f"{dashboard['title']}: {caption}", fontsize=11, y=1 - 0.15 / height_in, va="top")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return empty


def plot_all(recording: Path, out_dir: Path, caption: str) -> dict[str, list[str]]:
    """docs/img/dashboard-<name>.png for each shipped dashboard; returns each one's panels with no data."""
    rec = Recording.load(recording)
    empty = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        out = out_dir / f"dashboard-{path.stem.replace('_grafana_dashboard', '').replace('_', '-')}.png"
        empty[out.name] = plot(json.loads(path.read_text()), rec, out, caption)
    return empty


if __name__ == "__main__":
    for name, missing in plot_all(Path(sys.argv[1]), Path(sys.argv[2]), " ".join(sys.argv[3:])).items():
        print(name, "no data:", ", ".join(missing) or "-")
