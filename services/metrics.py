"""The replica's own metrics, on Ray's Prometheus endpoint next to Serve's (docs/observability.md).

`ray.serve.metrics` adds the `deployment`, `replica` and `application` tags, and Ray's metrics agent
exports what a replica records about every `metrics_report_interval_ms` (10 s by default), so a
value shows in a scrape up to that long after it happened. Ray adds the `ray_` prefix; counters
get `_total`, histograms `_bucket`, `_sum` and `_count`: the names below are what the code
records, EXPORTED what Prometheus sees. Each is defined here once: the replica records them
(services/recorders.py), and the load test, `nox -s metrics` and the dashboards read them. This
module imports nothing, so the CLI reads the names without paying for `ray.serve`.
"""

from __future__ import annotations

BATCH_SIZE = "dogbooth_batch_size"
QUEUE_WAIT = "dogbooth_queue_wait_seconds"
GENERATE = "dogbooth_generate_seconds"
ENCODE = "dogbooth_encode_seconds"
ADMISSION = "dogbooth_admission_decisions"
IMAGES = "dogbooth_images"
RSS = "dogbooth_replica_rss_bytes"
EXPORT_PREFIX = "ray_"  # Ray's exporter prefixes every application metric
EXPORTED = {
    BATCH_SIZE: "ray_dogbooth_batch_size",  # histogram: _bucket, _sum, _count
    QUEUE_WAIT: "ray_dogbooth_queue_wait_seconds",
    GENERATE: "ray_dogbooth_generate_seconds",
    ENCODE: "ray_dogbooth_encode_seconds",
    ADMISSION: "ray_dogbooth_admission_decisions_total",
    IMAGES: "ray_dogbooth_images_total",
    RSS: "ray_dogbooth_replica_rss_bytes",
}
# Admission's two answers (services/admission.py Decision.admit): the `outcome` tag's values.
ADMITTED, REFUSED = "admitted", "refused"
# The `adapter` tag of an image from the base model. Empty, not a word: any word could be an adapter id.
BASE_ADAPTER = ""

# Ray 2.60 exports a histogram's _sum rebuilt from bucket midpoints (the replica sends only bucket
# counts; ray-project/ray#64852), so the buckets decide how exact a mean is. Batch sizes: one bucket
# per size up to 16 (le="8.5" counts batches of at most 8), so their mean is exact there.
BATCH_BOUNDS: list[float] = [size + 0.5 for size in range(17)] + [24.5, 32.5, 48.5, 64.5]
# Seconds: 1 ms to 2 min at 1-1.5-2-3-5-7 per decade: a midpoint is within a third of any value in its
# bucket, and a mean over many requests is closer (their errors partly cancel).
SECONDS_BOUNDS: list[float] = [round(step * 10.0**exp, 6) for exp in range(-3, 2) for step in (1, 1.5, 2, 3, 5, 7)]
SECONDS_BOUNDS += [100, 120]
