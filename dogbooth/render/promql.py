"""The metric names a PromQL expression reads, and the expressions a Grafana dashboard runs.

A small tokenizer, not a regex over the text: function and aggregation names, keywords,
label names in `by (...)` / `on (...)`, label matchers, strings, durations, range and subquery
brackets and Grafana's `$variables` are all told apart from metric names, so a dashboard check can
say "this panel reads a metric nobody exports" without false alarms.

    metric_names('sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{route=~"$r"}[5m]))')
    -> {"ray_serve_http_request_latency_ms_bucket"}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# Grafana variables: $__rate_interval, $var, ${var}, ${var:format}, [[var]] (old syntax).
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>[{}()\[\],@]|=~|!~|!=|==|<=|>=|[-+*/%^=<>])
    """,
    re.VERBOSE,
)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
             "unless", "atan2", "inf", "nan", "start", "end"}  # fmt: skip
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}  # followed by (label, ...)
_GROUPING = {"by", "without"}
_OPEN = {"(": ")", "[": "]", "{": "}"}


class PromQLSyntaxError(ValueError):
    """The expression does not tokenize, or its brackets do not match."""


def tokenize(expr: str) -> list[tuple[str, str]]:
    text = _GRAFANA_VAR.sub("0", expr)  # a variable stands where a number, duration or name would
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise PromQLSyntaxError(f"cannot read {text[pos : pos + 20]!r} in {expr!r}")
        if m.lastgroup != "space":
            out.append((str(m.lastgroup), m.group()))
        pos = m.end()
    return out


def _skip_group(tokens: list[tuple[str, str]], i: int, expr: str) -> tuple[int, list[tuple[str, str]]]:
    """From an opening bracket at `i`: the index after its match, and the tokens inside."""
    stack, start = [tokens[i][1]], i
    i += 1
    while stack:
        if i >= len(tokens):
            raise PromQLSyntaxError(f"unclosed {stack[-1]!r} in {expr!r}")
        kind, value = tokens[i]
        if kind == "punct" and value in _OPEN:
            stack.append(value)
        elif kind == "punct" and value in _OPEN.values():
            opened = stack.pop()
            if value != _OPEN[opened]:
                raise PromQLSyntaxError(f"{opened!r} closed by {value!r} in {expr!r}")
        i += 1
    return i, tokens[start + 1 : i - 1]


def _unquote(token: str) -> str:
    return str(json.loads(token)) if token.startswith('"') else token[1:-1]


def _name_matchers(inside: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """`{__name__="foo"}` or `{__name__=~"foo|bar"}`: the selector names its metric as a label."""
    for j in range(len(inside) - 2):
        op, value = inside[j + 1], inside[j + 2]
        if inside[j] == ("ident", "__name__") and op[1] in ("=", "=~") and value[0] == "string":
            yield op[1], _unquote(value[1])


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects by name (see name_patterns for `__name__=~` selectors)."""
    return _scan(expr)[0]


def name_patterns(expr: str) -> set[str]:
    """The regular expressions of `{__name__=~"..."}` selectors in `expr` (fully anchored, as PromQL's)."""
    return _scan(expr)[1]


def _scan(expr: str) -> tuple[set[str], set[str]]:
    tokens, i, depth = tokenize(expr), 0, 0
    names: set[str] = set()
    patterns: set[str] = set()
    while i < len(tokens):
        kind, value = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "punct" and value in ("{", "["):  # label matchers, ranges, subqueries
            i, inside = _skip_group(tokens, i, expr)
            for op, name in _name_matchers(inside) if value == "{" else ():
                (names if op == "=" else patterns).add(name)
            continue
        if kind == "punct" and value in "()":
            depth += 1 if value == "(" else -1
        if depth < 0 or (kind == "punct" and value in "]}"):
            raise PromQLSyntaxError(f"unmatched {value!r} in {expr!r}")
        if kind == "ident" and value.lower() in _LABEL_LISTS:
            i += 1
            if i < len(tokens) and tokens[i] == ("punct", "("):
                i, _labels = _skip_group(tokens, i, expr)
            continue
        # A name before `(` is a function; before `by`/`without`, an aggregation: `sum by (x) (...)`.
        if kind == "ident" and value.lower() not in _KEYWORDS and nxt != ("punct", "(") and nxt[1] not in _GROUPING:
            names.add(value)
        i += 1
    if depth:
        raise PromQLSyntaxError(f"unclosed '(' in {expr!r}")
    return names, patterns


# label_values(EXPR, label) and query_result(EXPR) hold PromQL; label_values(label) holds none.
_TEMPLATE_QUERY = re.compile(
    r"^\s*(?:label_values\((?P<selector>.+),\s*\w+\s*\)|query_result\((?P<query>.+)\))\s*$", re.DOTALL
)


def template_expr(query: str) -> str | None:
    """The PromQL inside a Grafana template variable query, or None where it holds none."""
    m = _TEMPLATE_QUERY.match(query)
    return (m.group("selector") or m.group("query")).strip() if m else None


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows' nested panels too) and query variable."""
    found: list[tuple[str, str]] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        found.extend((f"panel {panel.get('title')!r}", t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if var.get("type") == "query" and (expr := template_expr(text)):
            found.append((f"variable {var.get('name')!r}", expr))
    return found
