"""The one `generate()` path, used by the Serve replica, the benchmark and Python callers alike."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.admission import Shape
from services.models import load_pipeline
from services.schemas import MEDIA_TYPES, AppArgs, ImagineParams

log = logging.getLogger("dogbooth.pipeline")
Timing = tuple[Shape, int, float]  # one pipeline call: (shape, images, seconds)


class Abandoned(RuntimeError):
    """Every caller of a pipeline call has gone away; the call stopped early."""


class AdapterNotLoaded(RuntimeError):
    """The batch's adapter was evicted between its load and its turn; the caller loads it again."""


class LimitError(ValueError):
    """A request inside the published bounds but outside this deployment's limits."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class _Slot:
    token: int  # which load this is: an old handle's unload must not remove a newer load of the same id
    size_bytes: int


_UNKNOWN = "\0unknown"  # the active adapter after a load: diffusers may have changed it


@dataclass
class Spent:
    """Where one job's time went in `generate_many`: its group's pipeline call, then its own encode."""

    generate_s: float = 0.0
    encode_s: float = 0.0


@dataclass(frozen=True)
class Job:
    """A fully resolved request: no defaults left to apply."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    seed: int
    format: str
    adapter: str | None = None  # a LoRA adapter id from the store; None = the base model
    # Set when the caller is gone (Serve's request timeout or a disconnect): stop computing for it.
    abandoned: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    spent: Spent = field(default_factory=Spent, compare=False, repr=False)  # filled in by generate_many

    @property
    def shape_key(self) -> Shape:
        """Jobs with equal keys can share one pipeline call."""
        return (self.steps, self.guidance, self.width, self.height)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def resolve(params: ImagineParams, args: AppArgs) -> Job:
    """Apply the profile's defaults and limits. Raises LimitError naming the field."""
    d, lim = args.defaults, args.limits
    width = params.img_size or params.width or d.width
    height = params.img_size or params.height or d.height
    steps = params.steps if params.steps is not None else d.steps
    if steps > lim.max_steps:
        raise LimitError("steps", f"at most {lim.max_steps} on this deployment (got {steps})")
    for name, value in (("width", width), ("height", height)):
        if value > lim.max_side:
            field = "img_size" if params.img_size else name
            raise LimitError(field, f"at most {lim.max_side} px on this deployment (got {value})")
    return Job(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt or "",
        steps=steps,
        guidance=params.guidance if params.guidance is not None else d.guidance,
        width=width,
        height=height,
        seed=params.seed if params.seed is not None else random.SystemRandom().randrange(2**32),
        format=params.format,
        adapter=params.adapter,
    )


def encode(image: Any, fmt: str) -> bytes:
    """Encode into a per-call buffer; the bytes depend only on the pixels (no timestamps)."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="WEBP", quality=90)
    return buffer.getvalue()


class Generator:
    """Loads the model once and turns Jobs into encoded images."""

    def __init__(self, args: AppArgs) -> None:
        started = time.perf_counter()
        import diffusers  # noqa: F401  # here, not in load_pipeline: `up --timings` reports the import apart
        import torch

        self.import_seconds = time.perf_counter() - started
        self.args = args
        # Ray sets OMP_NUM_THREADS to the actor's num_cpus (often 1); the profile decides instead.
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
        self.device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
        if self.device == "auto":
            self.device = "cpu"
        started = time.perf_counter()
        cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
        self.pipe = load_pipeline(args.model, dtype=args.dtype, cache_dir=cache).to(self.device)
        self.load_seconds = time.perf_counter() - started
        # One pipeline call or adapter change at a time: an adapter must not change under a running batch.
        self.lock = threading.Lock()
        self.adapters: dict[str, _Slot] = {}
        self._tokens = itertools.count(1)
        self._active: str | None = None  # None: the base model (no LoRA layer enabled)
        # The warm-up's measurement of one image alone, for admission; None until the first warm-up.
        self.alone: list[Timing] | None = None
        log.info("loaded %s on %s/%s in %.2fs", args.model, self.device, args.dtype, self.load_seconds)

    def load_adapter(self, adapter_id: str, path: str, size_bytes: int) -> int:
        """Add a LoRA export as an unfused adapter named `adapter_id`; returns the token that unloads it."""
        from diffusers.utils import logging as diffusers_logging

        with self.lock:
            if adapter_id in self.adapters:  # a reload after eviction raced with a request: start clean
                self._delete(adapter_id)
            self._active = _UNKNOWN
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()  # "no text_encoder keys" for every UNet-only adapter
            try:
                self.pipe.load_lora_weights(path, adapter_name=adapter_id)
            except Exception:
                with contextlib.suppress(Exception):  # a half-loaded adapter must not stay in the layers
                    self.pipe.delete_adapters(adapter_id)
                raise
            finally:
                diffusers_logging.set_verbosity(verbosity)
            token = next(self._tokens)
            self.adapters[adapter_id] = _Slot(token, size_bytes)
            return token

    def unload_adapter(self, adapter_id: str, token: int) -> None:
        """Remove `adapter_id`'s layers, unless a newer load replaced the one `token` names."""
        with self.lock:
            slot = self.adapters.get(adapter_id)
            if slot is not None and slot.token == token:
                self._delete(adapter_id)

    def _delete(self, adapter_id: str) -> None:
        del self.adapters[adapter_id]
        self.pipe.delete_adapters(adapter_id)
        self._active = _UNKNOWN

    def _activate(self, adapter: str | None) -> None:
        """Enable exactly `adapter` (None: no LoRA at all). Called with the lock held."""
        if adapter == self._active:
            return
        if adapter is None:
            # Disabled LoRA layers call their base layer alone: the same bytes as a never-adapted model.
            self.pipe.disable_lora()
        else:
            if adapter not in self.adapters:
                raise AdapterNotLoaded(f"adapter {adapter!r} is not loaded")
            self.pipe.enable_lora()
            self.pipe.set_adapters([adapter])
        self._active = adapter

    def adapter_memory(self) -> dict[str, Any]:
        return {"loaded": sorted(self.adapters), "bytes": sum(s.size_bytes for s in self.adapters.values())}

    def generate(self, job: Job) -> bytes:
        """One image; what a Python caller uses."""
        result = self.generate_many([job])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def generate_many(self, jobs: list[Job], timings: list[Timing] | None = None) -> list[bytes | Exception]:
        """A batch of jobs, in order. Jobs of one shape share a pipeline call; a failure stays per group.

        `timings`, when given, gets (shape, images, seconds) for each call that completed.
        """
        groups: dict[tuple[str | None, Shape], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[(job.adapter, job.shape_key)].append(index)
        results: list[bytes | Exception] = [RuntimeError("not generated")] * len(jobs)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            try:
                started = time.perf_counter()
                with self.lock:
                    called = time.perf_counter()
                    self._activate(group[0].adapter)
                    images = self._run(group)
                    generated = time.perf_counter()
                for i, job, image in zip(indices, group, images, strict=True):
                    encoding = time.perf_counter()
                    results[i] = encode(image, job.format)
                    job.spent.generate_s, job.spent.encode_s = generated - called, time.perf_counter() - encoding
                if timings is not None:
                    timings.append((group[0].shape_key, len(group), time.perf_counter() - started))
            except Exception as e:  # one bad group must not fail its neighbours
                if isinstance(e, Abandoned | AdapterNotLoaded):
                    log.info("%s", e)
                else:
                    log.exception("generation failed for %d job(s)", len(group))
                for i in indices:
                    results[i] = e
        return results

    def _run(self, group: list[Job]) -> list[Any]:
        import torch

        first = group[0]
        # A generator per image makes each image depend on its own seed, not on its batch mates.
        generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in group]

        def stop_if_abandoned(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            # Work nobody waits for would delay every request queued behind it, past its timeout too.
            if all(j.abandoned.is_set() for j in group):
                raise Abandoned(f"all {len(group)} caller(s) gone at step {step}: generation stopped")
            return kwargs

        with torch.inference_mode():
            out = self.pipe(
                prompt=[j.prompt for j in group],
                negative_prompt=[j.negative_prompt for j in group],
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                width=first.width,
                height=first.height,
                generator=generators,
                output_type="pil",
                callback_on_step_end=stop_if_abandoned,
            )
        return list(out.images)


_loaded: dict[str, Generator] = {}  # this process's model; outlives an in-process reload (services/hotswap.py)


def loaded_generator(args: AppArgs) -> Generator:
    """The process's Generator for `args`' model, loading it on first use.

    A replica that takes an edit in-process builds its handler again, but this module is one it
    keeps, so the pipeline stays loaded. Any other model argument loads afresh (and drops the old)."""
    key = args.model_dump_json(include={"model", "device", "dtype", "threads", "cache_dir"})
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = Generator(args)
    return _loaded[key]
