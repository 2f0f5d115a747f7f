"""The replica's recorders of dogbooth's metrics (their names, tags and buckets: services/metrics.py).

`ray.serve.metrics` adds the `deployment`, `replica` and `application` tags when the recorders are
created inside a replica, which is where `Imagine.__init__` creates them.
"""

from __future__ import annotations

import os

import psutil
from ray.serve import metrics as serve_metrics

from services import metrics as m


class ReplicaMetrics:
    """One replica's recorders. Create inside the replica, so Serve's tags name it."""

    def __init__(self, model: str) -> None:
        self.model = model
        Histogram = serve_metrics.Histogram
        tags = ("model",)
        self.batch_size = Histogram(m.BATCH_SIZE, "images per batch the model ran", m.BATCH_BOUNDS, tags)
        self.queue_wait = Histogram(
            m.QUEUE_WAIT, "per request: from admission until its batch started", m.SECONDS_BOUNDS, tags
        )
        self.generate = Histogram(
            m.GENERATE, "per request: the pipeline call that made its image (its batch mates share it)",
            m.SECONDS_BOUNDS, tags,
        )  # fmt: skip
        self.encode = Histogram(m.ENCODE, "per request: encoding its image (png/jpeg/webp)", m.SECONDS_BOUNDS, tags)
        for histogram in (self.batch_size, self.queue_wait, self.generate, self.encode):
            histogram.set_default_tags({"model": model})
        self.admission = serve_metrics.Counter(
            m.ADMISSION, f"admission's answer to each request: {m.ADMITTED} or {m.REFUSED} (503)", ("outcome",)
        )
        self.images = serve_metrics.Counter(
            m.IMAGES, "images generated, by model and LoRA adapter ('' = the base model)",
            ("model", "adapter"),  # type: ignore[arg-type]  # Ray 2.60 annotates tag_keys as a 1-tuple
        )  # fmt: skip
        self.rss = serve_metrics.Gauge(m.RSS, "resident memory of the replica's process")
        self._process = psutil.Process(os.getpid())

    def batch(self, size: int) -> None:
        """A batch of `size` requests goes to the model."""
        self.batch_size.observe(size)

    def made(self, adapter: str | None, images: int) -> None:
        """A batch ended with `images` images (its failed or abandoned requests got none)."""
        if images:
            self.images.inc(images, tags={"model": self.model, "adapter": adapter or m.BASE_ADAPTER})

    def request(self, queue_wait_s: float, generate_s: float, encode_s: float) -> None:
        """One request got its image: where its time went inside the replica."""
        self.queue_wait.observe(queue_wait_s)
        self.generate.observe(generate_s)
        self.encode.observe(encode_s)

    def decision(self, admitted: bool) -> None:
        self.admission.inc(tags={"outcome": m.ADMITTED if admitted else m.REFUSED})

    def sample_memory(self) -> int:
        rss = int(self._process.memory_info().rss)
        self.rss.set(rss)
        return rss
