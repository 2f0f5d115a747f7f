"""The Ray Serve application: `GET|POST /imagine`, `/healthz`, `/readyz`, OpenAPI at `/docs`.

One deployment both ingests HTTP and holds the model: a second hop buys nothing when every
request needs the model, and costs latency. Requests are batched (services/batcher.py) and
admitted by estimated latency (services/admission.py); count bounds and the request timeout come
from the Serve config that the profile generates.

LoRA adapters (docs/adapters.md) come from the store (services/adapters.py) on demand, are held
unfused in the pipeline through `serve.multiplexed` (its LRU, and its reports to Serve's router so
requests with the `serve_multiplexed_model_id` header go to a replica that holds the adapter), and
are switched per batch: the batcher never mixes adapters.
"""

import asyncio
import gc
import hmac
import logging
import os
import sys
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from services import adapters
from services.adapters import ADAPTER_ID, AdapterError, DamagedAdapter
from services.admission import Admission, Decision
from services.batcher import Batcher
from services.pipeline import AdapterNotLoaded, Generator, Job, LimitError, Timing, resolve
from services.revision import code_revision
from services.schemas import DEPLOYMENT_NAME, AppArgs, ImagineParams

log = logging.getLogger("dogbooth.app")
REVISION = code_revision()

api = FastAPI(
    title="dogbooth",
    summary="Text to image with a (DreamBooth fine-tuned) Stable Diffusion model.",
    version=REVISION,
)


def _field_errors(errors: list[dict[str, Any]]) -> dict[str, str]:
    """{"steps": "Input should be greater than or equal to 1", ...} from FastAPI's error list."""
    fields: dict[str, str] = {}
    for error in errors:
        loc = list(error.get("loc", ()))
        source = str(loc.pop(0)) if loc and loc[0] in ("query", "body") else "request"
        # Integer parts are character offsets (a JSON decode error), not field names.
        name = ".".join(str(part) for part in loc if isinstance(part, str))
        fields[name or source] = str(error.get("msg", "invalid"))
    return fields


def _invalid(fields: dict[str, str], detail: list[dict[str, Any]]) -> JSONResponse:
    names = ", ".join(sorted(fields))
    return JSONResponse(
        status_code=422,
        content={"error": f"invalid request: {names}", "fields": fields, "detail": detail},
    )


@api.exception_handler(RequestValidationError)
async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return _invalid(_field_errors(detail), detail)


def _authorized(request: Request, expected: str | None) -> bool:
    if not expected:
        return True
    header = request.headers.get("authorization", "")
    offered = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(offered.encode(), expected.encode())


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={"error": "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key"},
        headers={"WWW-Authenticate": "Bearer"},
    )


def _adapter_error(error: AdapterError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content={"error": str(error), "adapter": error.adapter_id})


class _LoadedAdapter:
    """What `serve.multiplexed` caches per adapter id; Serve calls `__del__` when its LRU evicts it."""

    def __init__(self, generator: Generator, adapter_id: str, token: int) -> None:
        self.generator, self.adapter_id, self.token = generator, adapter_id, token
        self.unloaded = False

    def __del__(self) -> None:
        # Serve calls this in a thread on eviction; the garbage collector may call it again later.
        if not self.unloaded:
            self.unloaded = True
            self.generator.unload_adapter(self.adapter_id, self.token)


_JSON_ERROR = {"application/json": {"example": {"error": "what is wrong, naming the field or adapter"}}}
IMAGINE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the image", "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    401: {"description": "missing or wrong API key (when the deployment sets one)", "content": _JSON_ERROR},
    404: {"description": "`adapter`: no adapter with this id in the store; the body names it", "content": _JSON_ERROR},
    408: {"description": "still queued or running past the request timeout (Serve's proxy)"},
    422: {"description": "a field is invalid, or the adapter is damaged; the body names which", "content": _JSON_ERROR},
    424: {"description": "the adapter was trained on another base model than this deployment serves",
          "content": _JSON_ERROR},
    500: {"description": "generation failed; the body has the request id", "content": _JSON_ERROR},
    503: {"description": "overloaded: retry after the Retry-After header's seconds", "content": _JSON_ERROR},
}  # fmt: skip


def _overloaded(decision: Decision, max_latency_x: float | None) -> JSONResponse:
    retry = decision.retry_after_s
    return JSONResponse(
        status_code=503,
        content={
            "error": (
                f"overloaded: this request would finish in about {decision.estimate_s:.1f} s, past this "
                f"deployment's bound of {decision.bound_s:.1f} s ({max_latency_x} x one image alone); "
                f"retry in {retry} s"
            ),
            "retry_after_s": retry,
        },
        headers={"Retry-After": str(retry)},
    )


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class Imagine:
    """A replica: the model, loaded once, behind the HTTP routes."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = AppArgs.model_validate(args)
        self.generator = Generator(self.args)
        self._api_key = os.environ.get(self.args.api_key_env) or None
        bounds = self.args.admission
        self.admission = Admission(bounds.max_latency_x, self.args.batching.max_batch_size, bounds.always_admit)
        batching = self.args.batching
        self.batcher = Batcher(
            self._generate_batch, batching.max_batch_size, batching.batch_wait_timeout_s, key=lambda job: job.adapter
        )
        self.store = adapters.store_dir(self.args)
        # Decorated here, not on the class: the LRU's size is the profile's, known only now.
        self._load_adapter = serve.multiplexed(max_num_models_per_replica=self.args.adapters.max_loaded)(
            self._adapter_loader()
        )
        self._warm_up()
        # A full garbage collection walks every object: ~0.5 s with torch, diffusers and Serve loaded,
        # which under load showed as latency spikes every ~15 s. What exists now lives as long as the
        # replica, so collections skip it from here on.
        gc.collect()
        gc.freeze()
        # Requests hop between Serve's event loop threads, and each hop waits for the GIL. The default
        # 5 ms switch interval let the generating thread hold it long enough that a 503 took ~75 ms
        # under overload; at 1 ms the hops are quick, and the model thread barely notices (its
        # compute runs in torch kernels without the GIL).
        sys.setswitchinterval(0.001)

    def _warm_up(self) -> None:
        """Two default images before taking traffic: the first pays for lazy set-up (kernels, allocator)
        so no user does; the second is a quiet measurement of one image alone for admission."""
        job = resolve(ImagineParams(prompt="warm-up"), self.args)
        timings: list[Timing] = []
        for result in (*self.generator.generate_many([job]), *self.generator.generate_many([job], timings)):
            if isinstance(result, Exception):
                raise RuntimeError(f"the model cannot generate: {result}") from result
        self.admission.finish(timings)

    def check_health(self) -> None:
        """Serve restarts a replica whose pipeline is gone."""
        if getattr(self.generator, "pipe", None) is None:
            raise RuntimeError("pipeline not loaded")

    def _adapter_loader(self) -> Any:
        generator, store, model = self.generator, self.store, self.args.model

        async def load_adapter_weights(adapter_id: str) -> _LoadedAdapter:
            info = adapters.read(store, adapter_id, model)  # the store as it is now: published, replaced, gone
            try:
                token = await asyncio.to_thread(generator.load_adapter, adapter_id, info.path, info.size_bytes)
            except Exception as e:  # diffusers and safetensors raise many types for a bad file
                raise DamagedAdapter(adapter_id, f"adapter {adapter_id!r} cannot be loaded: {e}") from e
            return _LoadedAdapter(generator, adapter_id, token)

        return load_adapter_weights

    async def _generate_batch(self, jobs: list[Job]) -> list[bytes | Exception]:
        self.admission.start([id(job) for job in jobs], [job.shape_key for job in jobs])
        timings: list[Timing] = []
        adapter = jobs[0].adapter  # the batcher keys batches by adapter: one per batch
        try:
            for _ in range(3):
                if adapter is not None:
                    # Marks it most recently used, and loads it again if the LRU evicted it since its request.
                    try:
                        await self._load_adapter(adapter)
                    except AdapterError as e:  # deleted or damaged since its request: each answers 404/422/424
                        return [e] * len(jobs)
                # The pipeline runs in a thread so health checks and queueing stay responsive.
                results = await asyncio.to_thread(self.generator.generate_many, jobs, timings)
                if not any(isinstance(r, AdapterNotLoaded) for r in results):
                    break
            return results
        finally:
            self.admission.finish(timings)

    def _requested_adapter(self, params: ImagineParams) -> tuple[ImagineParams, JSONResponse | None]:
        """`adapter=` or, failing that, Serve's multiplexed model id header; both must agree."""
        header = serve.get_multiplexed_model_id()
        if not header or header == params.adapter:
            return params, None
        name = "serve_multiplexed_model_id"
        if params.adapter is not None:
            msg = f"header {header!r} differs from adapter={params.adapter!r}; send one id"
        elif not ADAPTER_ID.match(header):
            msg = f"{header!r} is not an adapter id ([a-z0-9][a-z0-9-]{{0,62}})"
        else:
            return params.model_copy(update={"adapter": header}), None
        return params, _invalid({name: msg}, [{"loc": ["header", name], "msg": msg, "type": "value_error"}])

    async def _ensure_adapter(self, adapter_id: str) -> JSONResponse | None:
        # 404/422/424 before any queueing. An adapter not held is read by its loader; one held is checked
        # (off the event loop) in case it was deleted or damaged since it was loaded.
        try:
            if adapter_id in self.generator.adapters:
                await asyncio.to_thread(adapters.check, self.store, adapter_id, self.args.model)
            await self._load_adapter(adapter_id)
        except AdapterError as e:
            return _adapter_error(e)
        return None

    async def _imagine(self, params: ImagineParams, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if not _authorized(request, self._api_key):
            return _unauthorized()
        params, refused = self._requested_adapter(params)
        if refused is None and params.adapter is not None:
            refused = await self._ensure_adapter(params.adapter)
        if refused is not None:
            return refused
        try:
            job = resolve(params, self.args)
        except LimitError as e:
            detail = [{"loc": [e.field], "msg": str(e), "type": "limit"}]
            return _invalid({e.field: str(e)}, detail)
        decision = self.admission.offer(id(job), job.shape_key)
        if not decision.admit:
            return _overloaded(decision, self.args.admission.max_latency_x)
        try:
            result = await self.batcher.submit(job)
        except asyncio.CancelledError:  # Serve cancels us on its request timeout or a client disconnect
            job.abandoned.set()
            raise
        finally:
            self.admission.drop(id(job))
        if isinstance(result, AdapterError):  # deleted or damaged between the request and its batch
            return _adapter_error(result)
        if isinstance(result, Exception):
            log.error("request %s failed: %s", request_id, result)
            return JSONResponse(
                status_code=500,
                content={"error": "generation failed", "request_id": request_id},
            )
        headers = {
            "X-Seed": str(job.seed),
            "X-Model": self.args.model,
            "X-Dogbooth-Revision": REVISION,
            # X-Request-Id is added by Serve's proxy, which also passes it in to us.
        }
        if job.adapter:
            headers["X-Adapter"] = job.adapter
        return Response(content=result, media_type=job.media_type, headers=headers)

    @api.get(
        "/imagine",
        response_class=Response,
        responses=IMAGINE_RESPONSES,
        summary="Generate an image from query parameters",
    )
    async def imagine_get(self, params: Annotated[ImagineParams, Query()], request: Request) -> Response:
        return await self._imagine(params, request)

    @api.post(
        "/imagine", response_class=Response, responses=IMAGINE_RESPONSES, summary="Generate an image from a JSON body"
    )
    async def imagine_post(self, params: ImagineParams, request: Request) -> Response:
        return await self._imagine(params, request)

    @api.get(
        "/adapters",
        summary="The adapters in the store: base model, rank, size, created, and whether this replica holds them",
        responses={401: IMAGINE_RESPONSES[401]},
    )
    async def list_adapters(self, request: Request) -> Any:
        if not _authorized(request, self._api_key):
            return _unauthorized()
        loaded = set(list(self.generator.adapters))
        entries = await asyncio.to_thread(adapters.listing, self.store, self.args.model, loaded)
        return {"store": str(self.store), "base_model": self.args.model, "adapters": entries}

    @api.get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="The model is loaded and the replica can generate")
    async def readyz(self) -> dict[str, Any]:
        return {
            "status": "ready",
            "model": self.args.model,
            "device": self.generator.device,
            "revision": REVISION,
            "load_seconds": round(self.generator.load_seconds, 3),
            "admission": self.admission.snapshot(),
            "batches": self.batcher.stats(),
            "adapters": {
                **self.generator.adapter_memory(),
                "max_loaded": self.args.adapters.max_loaded,
                "store": str(self.store),
            },
        }


def build_app(args: dict[str, Any]) -> serve.Application:
    """The Serve app builder (`import_path: services.app:build_app`). Validates before any replica starts."""
    app_args = AppArgs.model_validate(args)
    return Imagine.bind(app_args.model_dump())  # type: ignore[attr-defined]  # added by @serve.deployment
