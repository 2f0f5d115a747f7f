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
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve._private.logging_utils import get_serve_logs_dir
from starlette.exceptions import HTTPException

from services import adapters, hotswap, responses
from services.adapters import ADAPTER_ID, AdapterError, DamagedAdapter
from services.admission import Admission
from services.batcher import Batcher, Seat
from services.metrics import ADMITTED, REFUSED
from services.pipeline import AdapterNotLoaded, Generator, Job, LimitError, Timing, loaded_generator, resolve
from services.recorders import ReplicaMetrics
from services.requestlog import GONE, RequestLog, Trace
from services.revision import code_revision
from services.schemas import DEPLOYMENT_NAME, AppArgs, ImagineParams, Limits, openapi_for

log = logging.getLogger("dogbooth.app")
REVISION = code_revision()

api = FastAPI(
    title="dogbooth",
    summary="Text to image with a (DreamBooth fine-tuned) Stable Diffusion model.",
    version=REVISION,
)


@api.exception_handler(RequestValidationError)
async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return responses.invalid(responses.field_errors(detail), detail)


@api.exception_handler(HTTPException)
async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Routing and body-parsing errors (404, 405, 400) in the service's one JSON error shape."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(responses.allowed_methods(request))
    what = {400: "the request body cannot be parsed (JSON text must be UTF-8)", 404: f"no route {request.url.path}",
            405: f"{request.method} is not served at {request.url.path}; use {headers.get('Allow')}"}  # fmt: skip
    return JSONResponse(status_code=exc.status_code, content={"error": what.get(exc.status_code, str(exc.detail))},
                        headers=headers)  # fmt: skip


_SERVED_LIMITS: list[Limits] = []  # the limits of the one deployment this process serves, once it starts


def _openapi() -> dict[str, Any]:
    """/openapi.json: the routes' spec with this deployment's limits, so what it calls valid is accepted here.

    Set on the app as its `openapi` before serve.ingress copies it: the copy calls this function,
    which reads this module's state, where the replica's constructor left its limits."""
    spec = FastAPI.openapi(api)
    return openapi_for(spec, _SERVED_LIMITS[-1]) if _SERVED_LIMITS else spec


api.openapi = _openapi  # type: ignore[method-assign]


def _publish_limits(limits: Limits) -> None:
    # A module function, so the replica's constructor (which Serve ships by value, with copies of the
    # globals it names) reaches this module's list, the one `_openapi` reads.
    _SERVED_LIMITS[:] = [limits]


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


def _serve_logs_dir() -> Path:
    # Above the class: defined below it, the replica raised NameError (Serve serializes the class early).
    # Serve's own replica logs are here; Ray 2.60 has no public call for it (ray.serve._private.logging_utils).
    return Path(get_serve_logs_dir())


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class Imagine:
    """A replica: the model, loaded once, behind the HTTP routes."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.init_started_at = time.time()
        self._init_args = args
        self.args = AppArgs.model_validate(args)
        _publish_limits(self.args.limits)
        self.generator = loaded_generator(self.args)  # still loaded when this is an in-process reload
        self.metrics = ReplicaMetrics(self.args.model)
        self.request_log = RequestLog(_serve_logs_dir(), serve.get_replica_context().replica_tag, self.args.model)
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
        so no user does; the second is a quiet measurement of one image alone for admission. A model
        kept across an in-process reload (services/hotswap.py) is warm: its measurement is reused."""
        started = time.perf_counter()
        if self.generator.alone is None:
            job = resolve(ImagineParams(prompt="warm-up"), self.args)
            timings: list[Timing] = []
            for result in (*self.generator.generate_many([job]), *self.generator.generate_many([job], timings)):
                if isinstance(result, Exception):
                    raise RuntimeError(f"the model cannot generate: {result}") from result
            self.generator.alone = timings
        self.admission.finish(self.generator.alone)
        self.warm_up_seconds = time.perf_counter() - started

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's user_config: the dev loop's in-process reload."""
        await hotswap.reload(self, config, REVISION, self._init_args)

    def check_health(self) -> None:
        """Serve restarts a replica whose pipeline is gone."""
        if getattr(self.generator, "pipe", None) is None:
            raise RuntimeError("pipeline not loaded")
        self.metrics.sample_memory()  # Serve calls this every health_check_period_s: the RSS gauge's clock

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
        self.metrics.batch(len(jobs))
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
            self.metrics.made(adapter, sum(isinstance(r, bytes) for r in results))
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
        return params, responses.invalid({name: msg}, [{"loc": ["header", name], "msg": msg, "type": "value_error"}])

    async def _ensure_adapter(self, adapter_id: str) -> JSONResponse | None:
        # 404/422/424 before any queueing. An adapter not held is read by its loader; one held is checked
        # (off the event loop) in case it was deleted or damaged since it was loaded.
        try:
            if adapter_id in self.generator.adapters:
                await asyncio.to_thread(adapters.check, self.store, adapter_id, self.args.model)
            await self._load_adapter(adapter_id)
        except AdapterError as e:
            return responses.adapter_error(e)
        return None

    async def _imagine(self, params: ImagineParams, request: Request) -> Response:
        """Answer, then write the request's log line (services/requestlog.py) whatever happened."""
        # Serve's proxy sets X-Request-ID on the way in (the client's own, or one it makes) and out.
        trace = Trace(request.headers.get("x-request-id") or uuid.uuid4().hex, request.method, params.prompt)
        status = GONE  # stays so when Serve cancels us: its request timeout or a client disconnect
        try:
            response = await self._answer(params, request, trace)
            status = response.status_code
            return response
        except Exception:
            status = 500
            raise
        finally:
            self.request_log.write(trace, status)

    async def _answer(self, params: ImagineParams, request: Request, trace: Trace) -> Response:
        request_id = trace.request_id
        if not responses.authorized(request, self._api_key):
            return responses.unauthorized()
        params, refused = self._requested_adapter(params)
        if refused is None and params.adapter is not None:
            refused = await self._ensure_adapter(params.adapter)
        trace.adapter = params.adapter
        if refused is not None:
            return refused
        try:
            job = resolve(params, self.args)
        except LimitError as e:
            detail = [{"loc": [e.field], "msg": str(e), "type": "limit"}]
            return responses.invalid({e.field: str(e)}, detail)
        trace.shape, trace.format = "x".join(f"{v:g}" for v in job.shape_key), job.format
        decision = self.admission.offer(id(job), job.shape_key)
        self.metrics.decision(decision.admit)
        trace.admission = ADMITTED if decision.admit else REFUSED
        if not decision.admit:
            return responses.overloaded(decision, self.args.admission.max_latency_x)
        seat = Seat()
        try:
            result = await self.batcher.submit(job, seat)
        except asyncio.CancelledError:  # Serve cancels us on its request timeout or a client disconnect
            job.abandoned.set()
            raise
        finally:
            self.admission.drop(id(job))
            if seat.batch_id:  # it joined a batch (else it left while queued)
                trace.batch_id, trace.batch_size, trace.queue_wait_s = seat.batch_id, seat.batch_size, seat.queue_wait_s
        if isinstance(result, AdapterError):  # deleted or damaged between the request and its batch
            return responses.adapter_error(result)
        if isinstance(result, Exception):
            log.error("request %s failed: %s", request_id, result)
            return JSONResponse(
                status_code=500,
                content={"error": "generation failed", "request_id": request_id},
            )
        trace.generate_s, trace.encode_s = job.spent.generate_s, job.spent.encode_s
        self.metrics.request(seat.queue_wait_s, job.spent.generate_s, job.spent.encode_s)
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
        responses=responses.IMAGINE_RESPONSES,
        summary="Generate an image from query parameters",
    )
    async def imagine_get(self, params: Annotated[ImagineParams, Query()], request: Request) -> Response:
        return await self._imagine(params, request)

    @api.post(
        "/imagine",
        response_class=Response,
        responses=responses.IMAGINE_RESPONSES,
        summary="Generate an image from a JSON body",
    )
    async def imagine_post(self, params: ImagineParams, request: Request) -> Response:
        return await self._imagine(params, request)

    @api.get(
        "/adapters",
        summary="The adapters in the store: base model, rank, size, created, and whether this replica holds them",
        responses={401: responses.IMAGINE_RESPONSES[401]},
    )
    async def list_adapters(self, request: Request) -> Any:
        if not responses.authorized(request, self._api_key):
            return responses.unauthorized()
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
            # Where the last construction went (`up --timings`); after an in-process reload, import and
            # load are those of the kept model, and the warm-up is ~0.
            "startup": {
                "init_started_at": self.init_started_at,
                "import_s": round(self.generator.import_seconds, 3),
                "load_s": round(self.generator.load_seconds, 3),
                "warm_up_s": round(self.warm_up_seconds, 3),
            },
            "reload": hotswap.status(),
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
