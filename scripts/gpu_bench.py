"""Raw Stable Diffusion throughput on one GPU, by option and batch size: `scripts/gpu-bench.sh`'s body.

Needs torch and diffusers only (no Ray, no dogbooth install, no network): the model is one of
services/generated.py's specs, `sd15` by default (SD 1.5's shapes, random weights), built in memory
on the device from its configs. With transformers installed it times the diffusers pipeline as
dogbooth runs it; without, the same UNet + scheduler + VAE loop on random prompt embeddings of CLIP's
shape (the text encoder is well under 1 % of an SD 1.5 image), and the JSON says which.

Options, each over the batch sizes (a later option keeps the earlier ones' settings):
  sdpa: torch's scaled_dot_product_attention (diffusers' default on torch 2), VAE in fp32;
  vae_fp16: the VAE in the UNet's dtype too;
  channels_last: the UNet and VAE in channels_last memory format;
  eager_attn: the classic attention (softmax(QK^T)V) instead of SDPA, for comparison;
  compile (--compile): channels_last plus torch.compile of the UNet; its first call's time is compile_s.
Writes --out (default gpu-bench.json); the schema is scripts/gpu-bench.schema.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # services/ from the checkout, not an install
from services import generated  # noqa: E402  (stdlib-only at import; torch, diffusers when building)

SCHEMA = "dogbooth-gpu-bench/1"
PROMPT = "a photo of sks dog in a bucket"
OPTIONS = {  # name: (attention, vae in the UNet's dtype, channels_last, torch.compile)
    "sdpa": ("sdpa", False, False, False),
    "vae_fp16": ("sdpa", True, False, False),
    "channels_last": ("sdpa", True, True, False),
    "eager_attn": ("eager", True, True, False),
    "compile": ("sdpa", True, True, True),
}
GOALS = {"a10g_class_images_per_s": 1.0, "h100_class_images_per_s": 6.0}  # 512 px, 25 steps, fp16


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15", choices=sorted(generated.SPECS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="default: float16 on cuda, float32 elsewhere")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch-sizes", default="1,2,4,8,16")
    p.add_argument("--options", default="sdpa,vae_fp16,channels_last,eager_attn", help=f"of {', '.join(OPTIONS)}")
    p.add_argument("--compile", action="store_true", help="also the compile option (minutes of compile time)")
    p.add_argument("--budget-s", type=float, default=360, help="stop starting new runs after this many seconds")
    p.add_argument("--min-time-s", type=float, default=3, help="time each batch size for at least this long")
    p.add_argument("--out", type=Path, default=Path("gpu-bench.json"))
    p.add_argument("--without-transformers", action="store_true", help="time the loop a box without it runs")
    args = p.parse_args(argv)
    args.option_names = [o.strip() for o in args.options.split(",") if o.strip()] + (["compile"] * args.compile)
    unknown = [o for o in args.option_names if o not in OPTIONS]
    if unknown:
        p.error(f"--options: unknown {', '.join(unknown)}; choose from {', '.join(OPTIONS)}")
    args.batch_size_list = [int(b) for b in args.batch_sizes.split(",")]
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    return args


class Runner:
    """One model on one device, with a call that makes `bs` images the way the chosen option says."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.torch, self.args = torch, args
        self.dtype = getattr(torch, args.dtype)
        self.with_pipeline = not args.without_transformers and importlib.util.find_spec("transformers") is not None
        started = time.perf_counter()
        with torch.device(args.device):  # weights are initialised on the device: seconds, not minutes
            if self.with_pipeline:
                self.pipe = generated.build_pipeline(generated.SPECS[args.model])
                self.unet, self.vae = self.pipe.unet, self.pipe.vae
                self.pipe.set_progress_bar_config(disable=True)
            else:
                from diffusers import AutoencoderKL, UNet2DConditionModel

                # generated's own configs: the same model as the pipeline path, without transformers' CLIP
                spec = generated.SPECS[args.model]
                self.unet = UNet2DConditionModel(**generated._unet_config(spec))
                self.vae = AutoencoderKL(**generated._vae_config(spec))
                self.hidden = spec.text_hidden
        # The scheduler's tables stay on the host, as the pipeline keeps them, outside the device context.
        from diffusers import DDIMScheduler

        self.scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
        if self.with_pipeline:
            self.pipe.scheduler = self.scheduler
        self.unet.to(dtype=self.dtype)
        self.build_s = time.perf_counter() - started
        self.params = {"unet": sum(p.numel() for p in self.unet.parameters()),
                       "vae": sum(p.numel() for p in self.vae.parameters())}  # fmt: skip
        if self.with_pipeline:
            self.pipe.text_encoder.to(dtype=self.dtype)
            self.params["text_encoder"] = sum(p.numel() for p in self.pipe.text_encoder.parameters())
        self.call_unet = self.unet

    def apply(self, option: str) -> dict[str, Any]:
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        attention, vae_low, channels_last, compiled = OPTIONS[option]
        processor = AttnProcessor2_0 if attention == "sdpa" else AttnProcessor
        self.unet.set_attn_processor(processor())
        self.vae.set_attn_processor(processor())
        self.vae.to(dtype=self.dtype if vae_low else self.torch.float32)
        layout = self.torch.channels_last if channels_last else self.torch.contiguous_format
        self.unet.to(memory_format=layout)
        self.vae.to(memory_format=layout)
        self.call_unet = self.torch.compile(self.unet, fullgraph=True) if compiled else self.unet
        if self.with_pipeline:
            self.pipe.unet = self.call_unet
        return {"attention": attention, "vae_dtype": str(self.vae.dtype).removeprefix("torch."),
                "channels_last": channels_last, "torch_compile": compiled}  # fmt: skip

    def latents(self, bs: int) -> Any:
        a, torch = self.args, self.torch
        if self.with_pipeline:
            return self.pipe(prompt=[PROMPT] * bs, width=a.size, height=a.size, num_inference_steps=a.steps,
                             output_type="latent").images  # fmt: skip
        side = a.size // 2 ** (len(self.vae.config.block_out_channels) - 1)
        latents = torch.randn(bs, 4, side, side, dtype=self.dtype, device=a.device)
        context = torch.randn(2 * bs, 77, self.hidden, dtype=self.dtype, device=a.device)  # [uncond, cond]
        self.scheduler.set_timesteps(a.steps)
        for t in self.scheduler.timesteps:
            noise = self.call_unet(torch.cat([latents] * 2), t, encoder_hidden_states=context).sample
            uncond, cond = noise.chunk(2)
            latents = self.scheduler.step(uncond + 7.5 * (cond - uncond), t, latents).prev_sample
        return latents

    def images(self, bs: int) -> float:
        """Seconds for `bs` images, decoded to uint8 pixels on the host (which waits for the device)."""
        torch = self.torch
        started = time.perf_counter()
        with torch.inference_mode():
            latents = self.latents(bs)
            pixels = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            ((pixels / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8).cpu()
        return time.perf_counter() - started


def measure(runner: Runner, option: str, bs: int, min_time_s: float) -> dict[str, Any]:
    torch = runner.torch
    entry: dict[str, Any] = {"option": option, "batch_size": bs, "compile_s": None}
    try:
        first = runner.images(bs)  # warm-up: kernel choice, allocator, and compilation when on
        times = [runner.images(bs)]
        while sum(times) < min_time_s or len(times) < 2:
            times.append(runner.images(bs))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {**entry, "status": "oom", "images_per_s": None, "s_per_image": None, "calls": 0}
    except Exception as e:  # e.g. a compile that breaks on this torch: the other options' figures must survive
        status = f"failed: {type(e).__name__}: {e}"[:300]
        return {**entry, "status": status, "images_per_s": None, "s_per_image": None, "calls": 0}
    per_call = sorted(times)[len(times) // 2]
    if OPTIONS[option][3]:
        entry["compile_s"] = round(first - per_call, 2)
    return {**entry, "status": "ok", "images_per_s": round(bs / per_call, 4),
            "s_per_image": round(per_call / bs, 4), "calls": len(times)}  # fmt: skip


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    runner = Runner(args)
    print(f"gpu-bench: {args.model} built on {args.device} in {runner.build_s:.1f}s: {runner.params}", flush=True)
    results: list[dict[str, Any]] = []
    for option in args.option_names:
        settings = runner.apply(option)
        for bs in args.batch_size_list:
            if time.monotonic() - started > args.budget_s:
                results.append({"option": option, "batch_size": bs, "status": "skipped: over --budget-s",
                                "images_per_s": None, "s_per_image": None, "calls": 0, "compile_s": None})  # fmt: skip
                continue
            result = {**measure(runner, option, bs, args.min_time_s), "settings": settings}
            results.append(result)
            print(f"gpu-bench: {option:<14} batch {bs:>2}: {result['status']} {result['images_per_s']} images/s",
                  flush=True)  # fmt: skip
    ok = [r for r in results if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["images_per_s"]) if ok else None
    report = {
        "schema": SCHEMA,
        "model": args.model,
        "params": runner.params,
        "text_encoder": "timed (diffusers pipeline)"
        if runner.with_pipeline
        else "not timed: transformers is not installed; random prompt embeddings",  # fmt: skip
        "device": args.device,
        **environment(args),
        "dtype": args.dtype,
        "size": args.size,
        "steps": args.steps,
        "build_s": round(runner.build_s, 2),
        "results": results,
        "best": {k: best[k] for k in ("option", "batch_size", "images_per_s", "s_per_image")} if best else None,
        "goals": GOALS,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu-bench: best {report['best']}; wrote {args.out} in {report['elapsed_s']}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
