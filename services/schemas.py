"""Typed inputs: the app builder's arguments and the `/imagine` request.

`AppArgs` is the `args` of the Serve application. The profile's `serve.app` section is
validated into it, so the profile, the generated Serve config and the running replica share
one definition.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

ImageFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# Hard bounds published in the OpenAPI schema. A profile's `limits` may only narrow them.
MAX_STEPS = 150
MIN_SIDE, MAX_SIDE = 64, 2048
DEPLOYMENT_NAME = "Imagine"  # the Serve deployment; the generated Serve config names it too
MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**32 - 1
# An adapter's id is its folder name in the store: DNS-label-like, so it is safe in a path, a URL and a header.
ADAPTER_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
# A prompt needs one character that is not ASCII whitespace. Spelled out, not `\S`: Python's and the
# Rust/JS regex engines that OpenAPI tools use disagree on what `\s` covers (e.g. U+001C).
PROMPT_PATTERN = r"[^ \t\n\r\f\v]"
SIDE_STEP = 8  # image sides are multiples of this (the VAE's downsampling)


class _Strict(BaseModel):
    # Identical to dogbooth.core.model.Strict (tests/test_architecture.py ties them); the replica
    # imports nothing of dogbooth, so it keeps its own.
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationDefaults(_Strict):
    """What a request gets for each parameter it leaves out."""

    steps: int = Field(20, ge=1, le=MAX_STEPS, description="denoising steps")
    guidance: float = Field(7.5, ge=0, le=30, description="classifier-free guidance scale")
    width: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)


class Limits(_Strict):
    """What this deployment accepts; tighter than the published bounds to protect the hardware."""

    max_steps: int = Field(50, ge=1, le=MAX_STEPS)
    max_side: int = Field(768, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)


class Batching(_Strict):
    """The replica's batcher (services/batcher.py): up to `max_batch_size` waiting requests run
    together when the model frees up; those with the same steps, size and guidance share one call."""

    max_batch_size: int = Field(8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=1)


class AdmissionSettings(_Strict):
    """Latency-bounded admission (services/admission.py): with more than `always_admit` requests in
    the replica, refuse with 503 at once any request whose estimated finish is more than
    `max_latency_x` times its cost alone. null = off: only Serve's count bounds
    (`max_ongoing_requests`, `max_queued_requests`) shed load."""

    max_latency_x: float | None = Field(
        None, ge=1, le=100, description="bound on (queue wait + own batch) / one image alone; null = off"
    )
    always_admit: int = Field(
        1, ge=1, le=1024, description="requests a replica takes whatever they cost: bursts this size never see a 503"
    )


class AdapterSettings(_Strict):
    """The LoRA adapter store (services/adapters.py): one dogbooth LoRA export per sub-folder, named by
    its id. Read when a request names an adapter, so adapters published later are served at once."""

    store: str | None = Field(None, description="directory (local path or a mounted PVC); null = <cache_dir>/adapters")
    max_loaded: int = Field(32, ge=1, le=1024, description="adapters held per replica (LRU, serve.multiplexed)")

    @field_validator("store")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            raise ValueError(
                f"{value!r}: object-store URIs are not read yet; mount the bucket (or a PVC) and give its path"
            )
        return value


class AppArgs(_Strict):
    """Arguments of `services.app:build_app`; the `args` of the Serve application."""

    model: str = Field("tiny", min_length=1, description="tiny | small | a local directory | hub id[@revision]")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    threads: int | None = Field(None, ge=1, le=256, description="torch intra-op threads per replica")
    cache_dir: str | None = Field(None, description="model cache; default ~/.cache/dogbooth")
    api_key_env: str = Field("DOGBOOTH_API_KEY", description="env var holding the API key; unset = open")
    defaults: GenerationDefaults = GenerationDefaults()
    limits: Limits = Limits()
    batching: Batching = Batching()
    admission: AdmissionSettings = AdmissionSettings()
    adapters: AdapterSettings = AdapterSettings()

    @model_validator(mode="after")
    def _consistent(self) -> AppArgs:
        if self.device == "cpu" and self.dtype == "float16":
            raise ValueError("dtype float16 needs device cuda; use float32 or bfloat16 on cpu")
        side = max(self.defaults.width, self.defaults.height)
        if side > self.limits.max_side:
            raise ValueError(f"defaults ask for {side} px but limits.max_side is {self.limits.max_side}")
        if self.defaults.steps > self.limits.max_steps:
            raise ValueError(f"defaults.steps {self.defaults.steps} exceeds limits.max_steps")
        return self


def _multiple_of_8(value: int | None) -> int | None:
    if value is not None and value % SIDE_STEP:
        raise ValueError(f"must be a multiple of 8 (got {value}; try {max(MIN_SIDE, value // 8 * 8)})")
    return value


# The schema states the rule; the validator above enforces it with a message that suggests a value.
_SIDE_SCHEMA: dict[str, Any] = {"multipleOf": SIDE_STEP}


class ImagineParams(_Strict):
    """One `/imagine` request: the same fields as GET query parameters or a POST JSON body."""

    prompt: str = Field(
        ..., min_length=1, max_length=MAX_PROMPT_CHARS, description="what to draw; not only whitespace",
        json_schema_extra={"pattern": PROMPT_PATTERN},
    )  # fmt: skip
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="what to avoid")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="denoising steps; profile default")
    guidance: float | None = Field(None, ge=0, le=30, description="guidance scale; profile default")
    width: int | None = Field(
        None, ge=MIN_SIDE, le=MAX_SIDE, description="pixels, a multiple of 8", json_schema_extra=_SIDE_SCHEMA
    )
    height: int | None = Field(
        None, ge=MIN_SIDE, le=MAX_SIDE, description="pixels, a multiple of 8", json_schema_extra=_SIDE_SCHEMA
    )
    img_size: int | None = Field(
        None, ge=MIN_SIDE, le=MAX_SIDE, json_schema_extra=_SIDE_SCHEMA,
        description="sets width and height (the original dogbooth client); with width or height, it must equal them",
    )  # fmt: skip
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed and parameters, same image")
    format: ImageFormat = Field("png", description="png, jpeg or webp")
    adapter: str | None = Field(
        None,
        pattern=ADAPTER_ID_PATTERN,
        description="LoRA adapter id from GET /adapters; none = the base model. Send the same id in the "
        "serve_multiplexed_model_id header so Serve routes to a replica that already holds it",
    )

    _sides = field_validator("width", "height", "img_size")(_multiple_of_8)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not re.search(PROMPT_PATTERN, value):
            raise ValueError("must contain more than whitespace")
        return value

    @field_validator("img_size")
    @classmethod
    def _img_size_agrees(cls, value: int | None, info: ValidationInfo) -> int | None:
        for side in ("width", "height"):
            given = info.data.get(side)
            if value is not None and given is not None and given != value:
                raise ValueError(f"img_size {value} conflicts with {side} {given}; send one of them")
        return value


class ErrorBody(BaseModel):
    """Every JSON error the service writes: `error` says what is wrong and names the field or adapter."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(..., description="what is wrong, naming the field or adapter")
    fields: dict[str, str] | None = Field(None, description="422: each invalid field and why")
    detail: list[dict[str, Any]] | None = Field(None, description="422: the validator's errors (loc, msg, type)")
    adapter: str | None = Field(None, description="404/422/424: the adapter id concerned")
    retry_after_s: int | None = Field(None, description="503: seconds to wait, as in the Retry-After header")
    request_id: str | None = Field(None, description="500: the id to look up in the replica's log")


_LIMITED = {"steps": "max_steps", "width": "max_side", "height": "max_side", "img_size": "max_side"}


def _narrow(schema: dict[str, Any], maximum: int) -> None:
    for branch in schema.get("anyOf", [schema]):  # optional fields are anyOf [integer, null]
        if "maximum" in branch:
            branch["maximum"] = min(branch["maximum"], maximum)


def openapi_for(spec: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The spec with this deployment's `limits` as the maxima of `/imagine`'s inputs.

    The published bounds (MAX_STEPS, MAX_SIDE) are what any deployment may allow; a request within
    them but over the profile's limits gets a 422. A spec that says so lets a client (or a fuzzer)
    know what is accepted here without trying."""
    narrowed = copy.deepcopy(spec)
    for name, field in _LIMITED.items():
        maximum = getattr(limits, field)
        body = narrowed.get("components", {}).get("schemas", {}).get("ImagineParams", {}).get("properties", {})
        if name in body:
            _narrow(body[name], maximum)
        for operation in narrowed.get("paths", {}).get("/imagine", {}).values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter.get("name") == name:
                    _narrow(parameter["schema"], maximum)
    return narrowed
