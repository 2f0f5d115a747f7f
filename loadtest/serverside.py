"""The server's side of a load test: dogbooth's own metrics, scraped before and after the run.

The difference of the two scrapes is what the replicas did during the run: mean batch size, where
a request's time went inside the replica (queue wait, generate, encode; means per request) and how
many requests admission refused. Ray exports every ~10 s, so the scrape after the run waits until
the images counter has caught up with the 200s Locust saw.
"""

from __future__ import annotations

import logging
from typing import Any

from dogbooth.core.errors import DogboothError
from dogbooth.platforms import local, promscrape
from dogbooth.platforms.promscrape import Scrape
from dogbooth.settings.profiles import Profile
from services import metrics as m

log = logging.getLogger("dogbooth.loadtest")
SERVER_KEYS = ("server_mean_batch", "server_queue_wait_ms", "server_generate_ms", "server_encode_ms", "server_rejected")
CATCH_UP_S = 45.0  # a few of Ray's 10 s export periods, on a loaded machine


def metrics_url(profile: Profile | None, host: str | None, given: str | None) -> str | None:
    """`--metrics-url`, else the local profile's own endpoint when the test runs against it; else None."""
    if given:
        return given
    if host or profile is None or profile.platform != "local":
        return None
    state = local.LocalState.read(profile.name)
    return (state.metrics_url or None) if state else None


def scrape_before(url: str | None) -> Scrape | None:
    if url is None:
        return None
    try:
        return promscrape.fetch(url)
    except promscrape.MetricsUnavailable as e:
        log.warning("no server-side figures: %s", e)
        return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def figures(after: Scrape, before: Scrape) -> dict[str, Any]:
    """The server_* keys from two scrapes."""
    name = m.EXPORTED
    mean_batch = promscrape.mean_between(after, before, name[m.BATCH_SIZE])
    return {
        "server_mean_batch": None if mean_batch is None else round(mean_batch, 2),
        "server_queue_wait_ms": _ms(promscrape.mean_between(after, before, name[m.QUEUE_WAIT])),
        "server_generate_ms": _ms(promscrape.mean_between(after, before, name[m.GENERATE])),
        "server_encode_ms": _ms(promscrape.mean_between(after, before, name[m.ENCODE])),
        "server_rejected": int(promscrape.delta(after, before, name[m.ADMISSION], outcome=m.REFUSED)),
        "server_images": int(promscrape.delta(after, before, name[m.IMAGES])),
    }


def collect(url: str | None, before: Scrape | None, images_ok: int) -> dict[str, Any]:
    """The server_* keys (None when there is no endpoint) and `server_metrics`: where they came from, or why not."""
    empty: dict[str, Any] = dict.fromkeys(SERVER_KEYS)
    if url is None:
        return {**empty, "server_metrics": "no metrics endpoint: pass --metrics-url (docs/observability.md)"}
    if before is None:
        return {**empty, "server_metrics": f"{url} did not answer before the run"}
    images = m.EXPORTED[m.IMAGES]

    def caught_up(scrape: Scrape) -> bool:
        return promscrape.delta(scrape, before, images) >= images_ok

    note = url
    try:
        after = promscrape.wait_for(url, f"{images_ok} images exported", caught_up, timeout_s=CATCH_UP_S)
    except DogboothError as e:  # the figures so far still say something; the note says they are partial
        log.warning("server-side figures may be partial: %s", e)
        try:
            after = promscrape.fetch(url)
        except promscrape.MetricsUnavailable as gone:
            return {**empty, "server_metrics": str(gone)}
        note = f"{url} (partial: {promscrape.delta(after, before, images):g} of {images_ok} images exported)"
    return {**figures(after, before), "server_metrics": note}
