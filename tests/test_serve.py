"""The /imagine service over real HTTP on a real Ray Serve app serving the tiny model."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import Stack
from PIL import Image

from dogbooth.core.polling import poll
from services.admission import SHEDDING_HOLD_S

PROMPT = "a photo of sks dog"
SLOW = {"steps": 50, "width": 128, "height": 128}  # ~1 s on tiny, where a default image takes ~0.1 s


def get(stack: Stack, **params: object) -> requests.Response:
    return requests.get(stack.endpoint, params={"steps": 4, **params}, timeout=60)


@pytest.mark.parametrize(("fmt", "media", "pil_format"), [
    ("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP"),
])  # fmt: skip
def test_formats_decode_at_the_asked_size(stack: Stack, fmt: str, media: str, pil_format: str) -> None:
    r = get(stack, prompt=PROMPT, width=96, height=64, format=fmt, seed=1)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    image = Image.open(io.BytesIO(r.content))
    assert (image.format, image.size) == (pil_format, (96, 64))


def test_default_format_is_png_with_metadata_headers(stack: Stack) -> None:
    r = get(stack, prompt=PROMPT, seed=42)
    assert r.status_code == 200
    assert r.content.startswith(b"\x89PNG")
    assert r.headers["x-seed"] == "42"
    assert r.headers["x-model"] == "tiny"
    assert len(r.headers["x-dogbooth-revision"]) == 12
    assert r.headers["x-request-id"]


def test_unseeded_requests_report_the_seed_that_reproduces_them(stack: Stack) -> None:
    first = get(stack, prompt=PROMPT)
    again = get(stack, prompt=PROMPT, seed=int(first.headers["x-seed"]))
    assert first.content == again.content


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(stack: Stack) -> None:
    a = get(stack, prompt=PROMPT, seed=7).content
    b = get(stack, prompt=PROMPT, seed=7).content
    c = get(stack, prompt=PROMPT, seed=8).content
    assert a == b
    assert a != c


def test_img_size_sets_both_sides(stack: Stack) -> None:
    r = get(stack, prompt=PROMPT, img_size=128, seed=3)
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (128, 128)
    same = get(stack, prompt=PROMPT, width=128, height=128, seed=3)
    assert same.content == r.content


def test_get_and_post_agree(stack: Stack) -> None:
    body = {"prompt": PROMPT, "seed": 7, "steps": 4}
    posted = requests.post(stack.endpoint, json=body, timeout=60)
    assert posted.status_code == 200
    assert posted.content == get(stack, prompt=PROMPT, seed=7).content


BAD_QUERIES = [
    ({"steps": 0}, "steps"),
    ({"steps": 51}, "steps"),  # inside the published bound, over the profile's limit
    ({"steps": "many"}, "steps"),
    ({"width": 13}, "width"),
    ({"width": 100}, "width"),  # not a multiple of 8
    ({"height": 4096}, "height"),
    ({"width": 1024}, "width"),  # over the profile's max_side
    ({"img_size": 64, "width": 128}, "img_size"),
    ({"guidance": -1}, "guidance"),
    ({"seed": -5}, "seed"),
    ({"seed": 2**40}, "seed"),
    ({"format": "gif"}, "format"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"stesp": 4}, "stesp"),  # a typo must not be silently ignored
]


@pytest.mark.parametrize(("params", "field"), BAD_QUERIES)
def test_bad_input_gets_a_422_naming_the_field(stack: Stack, params: dict[str, object], field: str) -> None:
    query = {"prompt": PROMPT, **params}
    r = requests.get(stack.endpoint, params=query, timeout=30)
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in body["fields"], body
    assert field in body["error"]


def test_missing_prompt_and_bad_bodies(stack: Stack) -> None:
    r = requests.get(stack.endpoint, timeout=30)
    assert r.status_code == 422 and "prompt" in r.json()["fields"]
    r = requests.post(stack.endpoint, data="not json", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and "body" in r.json()["fields"]
    r = requests.post(stack.endpoint, json={"prompt": PROMPT, "steps": 0}, timeout=30)
    assert r.status_code == 422 and "steps" in r.json()["fields"]
    r = requests.post(stack.endpoint, json=["a list"], timeout=30)
    assert r.status_code == 422


def test_service_keeps_serving_after_bad_input(stack: Stack) -> None:
    for params, _ in BAD_QUERIES:
        requests.get(stack.endpoint, params={"prompt": PROMPT, **params}, timeout=30)
    assert get(stack, prompt=PROMPT, seed=1).status_code == 200


def test_a_burst_up_to_always_admit_all_answer(stack: Stack) -> None:
    burst = stack.profile.serve.app.admission.always_admit
    with ThreadPoolExecutor(burst) as pool:
        responses = list(pool.map(lambda s: get(stack, prompt=f"{PROMPT} {s}", seed=s), range(burst)))
    assert [r.status_code for r in responses] == [200] * burst
    assert len({r.content for r in responses}) == burst


def _ready(stack: Stack) -> dict[str, Any]:
    return requests.get(f"{stack.base_url}/readyz", timeout=10).json()


def _until(stack: Stack, what: str, check: Callable[[dict[str, Any]], bool]) -> None:
    """Poll /readyz until `check` holds for it; fail naming `what` after 60 s."""
    poll(what, lambda: True if check(_ready(stack)) else None, timeout_s=60, interval_s=0.01)


def test_requests_arriving_while_the_model_is_busy_share_the_next_batch(stack: Stack) -> None:
    before = _ready(stack)["batches"]
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(get, stack, prompt=PROMPT, seed=0, **SLOW)
        _until(stack, "the slow request to run", lambda r: r["admission"]["running"])
        rest = [pool.submit(get, stack, prompt=f"{PROMPT} {s}", seed=s) for s in range(1, 4)]
        # All three wait while it runs: the batcher hands them to the model together when it is free.
        _until(stack, "three requests waiting behind it", lambda r: r["admission"]["waiting"] == 3)
        assert [f.result().status_code for f in (slow, *rest)] == [200] * 4
    after = _ready(stack)["batches"]
    assert (after["images"] - before["images"], after["batches"] - before["batches"]) == (4, 2)


def test_health_readiness_and_openapi(stack: Stack) -> None:
    assert requests.get(f"{stack.base_url}/healthz", timeout=10).json()["status"] == "ok"
    ready = requests.get(f"{stack.base_url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and ready["model"] == "tiny"
    spec = requests.get(f"{stack.base_url}/openapi.json", timeout=10).json()
    params = {p["name"]: p for p in spec["paths"]["/imagine"]["get"]["parameters"]}
    assert params["prompt"]["required"] is True
    assert {"negative_prompt", "steps", "guidance", "width", "height", "img_size", "seed", "format"} <= set(params)
    assert "post" in spec["paths"]["/imagine"]
    assert requests.get(f"{stack.base_url}/docs", timeout=10).status_code == 200


def test_a_request_that_would_wait_too_long_gets_a_503_naming_the_bound(stack: Stack) -> None:
    """Runs last in this module: after a refusal the replica sheds bursts for a few seconds."""
    burst = stack.profile.serve.app.admission.always_admit
    with ThreadPoolExecutor(burst) as pool:
        slow = [pool.submit(get, stack, prompt=PROMPT, seed=s, **SLOW) for s in range(burst)]
        _until(stack, f"all {burst} slow requests in the replica", lambda r: r["admission"]["in_replica"] == burst)
        late = get(stack, prompt=PROMPT, seed=99)
        assert [f.result().status_code for f in slow] == [200] * burst
    assert late.status_code == 503, late.text
    body = late.json()
    assert body["error"].startswith("overloaded: this request would finish in about")
    assert "x one image alone" in body["error"]
    assert int(late.headers["Retry-After"]) == body["retry_after_s"] >= 1
    assert 0 < _ready(stack)["admission"]["shedding_s"] <= SHEDDING_HOLD_S  # the floor is off for a while
    _until(stack, "the shedding hold to end", lambda r: r["admission"]["shedding_s"] == 0)
    with ThreadPoolExecutor(burst) as pool:  # the always_admit floor is back: a burst that size is taken
        again = list(pool.map(lambda s: get(stack, prompt=PROMPT, seed=s).status_code, range(burst)))
    assert again == [200] * burst
