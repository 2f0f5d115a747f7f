"""The /imagine service over real HTTP on a real Ray Serve app serving the tiny model."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import Stack
from PIL import Image

PROMPT = "a photo of sks dog"


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


def test_concurrent_requests_are_batched_and_all_answer(stack: Stack) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda s: get(stack, prompt=f"{PROMPT} {s}", seed=s), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.content for r in responses}) == 8


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
