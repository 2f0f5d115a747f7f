"""`nox -s metrics`: one screen from a stack's Prometheus endpoint, Serve's request counts and dogbooth's own.

`local` is read where `up` started Ray's metrics export (the state file knows the URL); any other
stack through `--url`, e.g. a port-forward to a Ray pod's metrics port (docs/observability.md).
"""

from __future__ import annotations

from dogbooth.core.errors import DogboothError
from dogbooth.platforms import local, promscrape
from dogbooth.platforms.promscrape import Scrape
from dogbooth.settings.profiles import Profile
from services import metrics as m

SERVE_REQUESTS = "ray_serve_num_http_requests_total"  # Serve's proxy: one per HTTP request, by route and status
SERVE_LATENCY = "ray_serve_http_request_latency_ms"  # Serve's proxy: end-to-end latency histogram (ms)
IMAGINE_ROUTE = "/imagine"


def metrics_url(profile: Profile, url: str | None) -> str:
    """`url`, or where the profile's local stack exports; a DogboothError says how to get one."""
    if url:
        return url
    if profile.platform != "local":
        raise DogboothError(
            f"profile {profile.name} runs on {profile.platform}: port-forward a Ray pod's metrics port and pass "
            "--url, e.g. `kubectl -n dogbooth port-forward <head pod> 8080` then --url http://127.0.0.1:8080/metrics"
        )
    state = local.LocalState.read(profile.name)
    if state is None or not local.is_alive(state):
        raise DogboothError(f"profile {profile.name} is not up: run `nox -s up -- --profile {profile.name}` first")
    if not state.metrics_url:
        raise DogboothError(
            f"profile {profile.name} was started before it exported metrics: "
            f"`nox -s down -- --profile {profile.name}`, then up again"
        )
    return state.metrics_url


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _counts(values: dict[str, float]) -> str:
    return ", ".join(f"{k or '(none)'}: {v:g}" for k, v in values.items()) or "none yet"


def _timing_line(scrape: Scrape, histogram: str) -> str:
    name = m.EXPORTED[histogram]
    mean = promscrape.mean_between(scrape, None, name)
    p50 = promscrape.quantile(scrape.buckets(name), 0.5)
    return f"mean {_ms(mean)} ms, p50 ~{_ms(p50)} ms"


def summary(scrape: Scrape) -> list[str]:
    """The lines `nox -s metrics` prints, from one scrape (totals since each process started)."""
    images = scrape.by(m.EXPORTED[m.IMAGES], "adapter")
    batch = m.EXPORTED[m.BATCH_SIZE]
    batches = scrape.total(f"{batch}_count")
    mean_batch = promscrape.mean_between(scrape, None, batch)
    decisions = scrape.by(m.EXPORTED[m.ADMISSION], "outcome")
    refused = decisions.get(m.REFUSED, 0.0)
    decided = sum(decisions.values())
    rss = scrape.by(m.EXPORTED[m.RSS], "replica")
    p50 = promscrape.quantile(scrape.buckets(SERVE_LATENCY, route=IMAGINE_ROUTE), 0.5)
    p95 = promscrape.quantile(scrape.buckets(SERVE_LATENCY, route=IMAGINE_ROUTE), 0.95)
    by_model = scrape.by(m.EXPORTED[m.IMAGES], "model")
    rows = [
        ("requests /imagine", "by status: " + _counts(scrape.by(SERVE_REQUESTS, "status_code", route=IMAGINE_ROUTE))),
        ("  latency (Serve)", f"p50 ~{p50 or 0:.0f} ms, p95 ~{p95 or 0:.0f} ms (from its histogram's buckets)"),
        ("images", f"{sum(images.values()):g} by model: {_counts(by_model)}"),
        ("  by adapter", _counts({k or "(base)": v for k, v in images.items()})),
        ("batches", f"{batches:g}, mean size {mean_batch or 0:.2f}"),
        ("queue wait", _timing_line(scrape, m.QUEUE_WAIT)),
        ("generate", _timing_line(scrape, m.GENERATE)),
        ("encode", _timing_line(scrape, m.ENCODE)),
        ("admission", _counts(decisions) + (f" ({refused / decided:.1%} refused)" if decided else "")),
        ("replica RSS", ", ".join(f"{k}: {v / 2**20:.0f} MiB" for k, v in rss.items()) or "not exported yet"),
    ]
    width = max(len(label) for label, _ in rows)
    head = [f"dogbooth metrics from {scrape.url} (totals since start; Ray exports every ~10 s)"]
    return head + [f"{label:<{width}}  {value}" for label, value in rows]


def run(profile: Profile, url: str | None) -> None:
    print("\n".join(summary(promscrape.fetch(metrics_url(profile, url)))), flush=True)
