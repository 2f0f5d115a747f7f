"""Read a Prometheus text endpoint (Ray's metrics export) and sum its samples by name and labels.

Used by `nox -s metrics` (a one-screen summary), the load test (server-side figures from the
difference of two scrapes) and the tests. Ray's agent exports what a process recorded about every
10 s (`metrics_report_interval_ms`), so a scrape lags the service by up to that much.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

from dogbooth.core.errors import DogboothError
from dogbooth.core.polling import poll


class MetricsUnavailable(DogboothError):
    """The metrics endpoint did not answer, or did not answer Prometheus text."""


@dataclass(frozen=True)
class Sample:
    name: str  # as exported: ray_dogbooth_images_total, ray_dogbooth_batch_size_bucket, ...
    labels: dict[str, str]
    value: float


def _matches(sample: Sample, name: str, match: dict[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in match.items())


@dataclass(frozen=True)
class Scrape:
    url: str
    samples: tuple[Sample, ...]

    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def total(self, name: str, **match: str) -> float:
        """The sum over every series of `name` whose labels include `match`; 0 when there is none."""
        return sum(s.value for s in self.samples if _matches(s, name, match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """`total` split by one label's values."""
        out: dict[str, float] = defaultdict(float)
        for s in self.samples:
            if _matches(s, name, match):
                out[s.labels.get(label, "")] += s.value
        return dict(sorted(out.items()))

    def buckets(self, histogram: str, **match: str) -> dict[float, float]:
        """Cumulative counts by upper bound (`le`), summed over series, of a histogram's `_bucket` samples."""
        out: dict[float, float] = defaultdict(float)
        for s in self.samples:
            if _matches(s, f"{histogram}_bucket", match):
                out[float(s.labels["le"])] += s.value
        return dict(sorted(out.items()))


def fetch(url: str, *, timeout_s: float = 10) -> Scrape:
    """One scrape of `url`. MetricsUnavailable says why there is none."""
    try:
        r = requests.get(url, timeout=timeout_s)
    except requests.RequestException as e:
        raise MetricsUnavailable(f"{url} does not answer ({type(e).__name__}): is the stack up?") from e
    if not r.ok:
        raise MetricsUnavailable(f"{url} answered {r.status_code}: {r.text[:200]}")
    try:
        samples = tuple(
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        )
    except ValueError as e:
        raise MetricsUnavailable(f"{url} did not answer Prometheus text: {e}") from e
    return Scrape(url, samples)


def wait_for(url: str, what: str, ready: Callable[[Scrape], bool], *, timeout_s: float = 60) -> Scrape:
    """Scrape until `ready(scrape)`: the agent exports on its own clock, so a new value takes a while."""

    def check() -> Scrape | None:
        scrape = fetch(url)
        return scrape if ready(scrape) else None

    return poll(f"{what} at {url}", check, timeout_s=timeout_s, interval_s=1, error=MetricsUnavailable)


def delta(after: Scrape, before: Scrape | None, name: str, **match: str) -> float:
    """How much a counter (or a histogram's _sum/_count) grew between two scrapes."""
    return after.total(name, **match) - (before.total(name, **match) if before else 0.0)


def mean_between(after: Scrape, before: Scrape | None, histogram: str, **match: str) -> float | None:
    """The mean of what a histogram observed between two scrapes; None when it observed nothing."""
    count = delta(after, before, f"{histogram}_count", **match)
    return delta(after, before, f"{histogram}_sum", **match) / count if count > 0 else None


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """PromQL's histogram_quantile over cumulative buckets: linear inside the bucket that holds rank q."""
    if not buckets or math.inf not in buckets or buckets[math.inf] <= 0:
        return None
    rank, lower, below = q * buckets[math.inf], 0.0, 0.0
    for bound, count in buckets.items():
        if count >= rank:
            if bound == math.inf:
                return lower  # past the last finite bound: PromQL answers that bound too
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return None
