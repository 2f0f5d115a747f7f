"""Locust suite for dogbooth's `/imagine`: `locust -f loadtest/locustfile.py --host http://HOST:PORT`.

Usually started by `python -m dogbooth loadtest`, which sets the environment below from the profile:
- `DOGBOOTH_LT_MIX`: sizes and steps to request (JSON, see loadtest/mix.py); unset = server defaults;
- `DOGBOOTH_LT_SHAPE`: steady (default), step or spike (loadtest/shapes.py);
- `DOGBOOTH_API_KEY`: sent as `Authorization: Bearer <key>` when set;
- `DOGBOOTH_LT_STATUS_FILE`: where to write the HTTP status counts when the run ends.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.stats import CSV_STATS_INTERVAL_SEC

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # locust imports this file by path
from loadtest import shapes  # noqa: E402
from loadtest.mix import MIX_ENV, Mix, request_name  # noqa: E402

MIX = Mix.from_env(os.environ.get(MIX_ENV))
STATUS_COUNTS: Counter[str] = Counter()

_shape_name = os.environ.get("DOGBOOTH_LT_SHAPE", "steady")
if _shape_name not in shapes.SHAPES:
    raise SystemExit(f"DOGBOOTH_LT_SHAPE={_shape_name!r}: use one of {', '.join(shapes.SHAPES)}")
# Locust runs the one LoadTestShape subclass it finds in this module's namespace.
SelectedShape = shapes.SHAPES[_shape_name]


class ImagineUser(FastHttpUser):
    """One person at the API: asks for an image, looks at it for a moment, asks again."""

    # Short think time: each user is a client app in a loop, so users ~ concurrent requests.
    wait_time = staticmethod(lambda: random.uniform(0.0, 0.2))
    # The proxy answers 408 after the profile's request_timeout_s; never give up before it does.
    network_timeout = 180.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        self.rng = random.Random()
        key = os.environ.get("DOGBOOTH_API_KEY")
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    def _check(self, response: Any, params: dict[str, Any]) -> None:
        STATUS_COUNTS[str(response.status_code or 0)] += 1
        if response.status_code != 200:
            body = (response.text or "")[:200] if response.status_code else str(response.error)
            response.failure(f"HTTP {response.status_code}: {body}")
        elif not (response.headers.get("content-type") or "").startswith("image/"):
            response.failure(f"200 but content-type {response.headers.get('content-type')!r}")
        elif "seed" in params and response.headers.get("x-seed") != str(params["seed"]):
            response.failure(f"asked for seed {params['seed']}, got X-Seed {response.headers.get('x-seed')}")
        else:
            response.success()

    @task(3)
    def imagine_get(self) -> None:
        """The original dogbooth client: `GET /imagine?prompt=...&img_size=...`."""
        params = MIX.request(self.rng)
        with self.client.get(
            f"/imagine?{urlencode(params)}", headers=self.auth, name=request_name(params), catch_response=True
        ) as response:
            self._check(response, params)

    @task(1)
    def imagine_post(self) -> None:
        """API clients: `POST /imagine` with a JSON body."""
        params = MIX.request(self.rng)
        with self.client.post(
            "/imagine", json=params, headers=self.auth, name=request_name(params), catch_response=True
        ) as response:
            self._check(response, params)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    path = os.environ.get("DOGBOOTH_LT_STATUS_FILE")
    if path:
        Path(path).write_text(json.dumps(dict(sorted(STATUS_COUNTS.items())), indent=2))
    # Requests that finished during --stop-timeout are in the final stats but not yet in the CSVs,
    # which Locust rewrites once per CSV_STATS_INTERVAL_SEC: give its writer one more pass.
    gevent.sleep(CSV_STATS_INTERVAL_SEC * 1.5)
