"""The DreamBooth recipe: `setup / train / save_checkpoint / export / cleanup` on diffusers + accelerate.

Each optimizer step draws its images, noise and timesteps from a generator seeded by (seed, step),
so a resumed run continues exactly where an uninterrupted one would be: the checkpoint only has to
hold the trainable weights, the optimizer and the LR schedule.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.models import ModelError, load_pipeline
from training import checkpoints, export, figures
from training.batches import diffusion_loss
from training.checkpoints import work_dir_for
from training.config import RecipeConfig
from training.data import generate_class_images, load_folder, to_tensor, write_synthetic_dataset
from training.errors import CheckpointError, TrainingError
from training.optim import adam_class
from training.state import CachedImages, LossInputs, TrainedModules, TrainResult
from training.validation import save_grid

log = logging.getLogger("dogbooth.training")

LORA_TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class DreamBoothRecipe:
    """One fine-tuning run. Use as `setup(); train(); export(); cleanup()` (see `training.run`)."""

    def __init__(self, config: RecipeConfig, *, resume: str | None = None) -> None:
        self.cfg = config
        self.resume = resume
        self.output_dir = Path(config.export.output_dir).expanduser().resolve()
        self.work_dir = work_dir_for(self.output_dir)
        self.step = 0
        self.losses: list[float] = []
        self.train_seconds = 0.0
        self.resumed_from = 0

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        export.check_hub_token(self.cfg.export)
        self._read_instances()  # bad data fails here, before seconds of model loading
        self._setup_accelerator()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._share_state()
        self.before = self._figures_before()
        self._resume()

    def _setup_accelerator(self) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        t = self.cfg.train
        if t.threads or t.device == "cpu" or not torch.cuda.is_available():
            torch.set_num_threads(t.threads or len(os.sched_getaffinity(0)))
        device = t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device is cuda but no CUDA GPU is visible; use device: auto or cpu")
        precision = t.mixed_precision
        if precision == "auto":
            precision = "no" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        self.accelerator = Accelerator(
            cpu=device == "cpu",
            mixed_precision=precision,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
        )
        self.device = self.accelerator.device
        # Frozen modules run in the low-precision type; trainable weights stay float32 for stable updates.
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        set_seed(t.seed)
        log.info("device %s, mixed precision %s", self.device, precision)

    def _setup_model(self) -> None:
        import torch
        from diffusers import DDPMScheduler
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        m = self.cfg.model
        try:
            self.pipe = load_pipeline(m.base_model, dtype="float32")
        except ModelError as e:
            raise TrainingError(f"model.base_model: {e}") from e
        self.noise_scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        unet, text_encoder, vae = self.pipe.unet, self.pipe.text_encoder, self.pipe.vae
        unet.set_attn_processor(AttnProcessor2_0() if m.attention == "sdpa" else AttnProcessor())
        vae.requires_grad_(False)
        train_te_full = m.train_text_encoder and m.method == "full"
        text_encoder.requires_grad_(train_te_full)
        unet.requires_grad_(m.method == "full")
        self._place(vae, self.weight_dtype)
        self._place(text_encoder, torch.float32 if train_te_full else self.weight_dtype)
        self._place(unet, torch.float32 if m.method == "full" else self.weight_dtype)
        if m.method == "lora":
            self._add_lora(unet, text_encoder)
        if m.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if m.train_text_encoder:
                # transformers 5 renamed it; the old name warns and goes away in v6.
                enable = getattr(text_encoder, "activation_checkpointing_enable", None)
                (enable or text_encoder.gradient_checkpointing_enable)()
        self.trainables = [unet] + ([text_encoder] if m.train_text_encoder else [])
        count = sum(p.numel() for mod in self.trainables for p in mod.parameters() if p.requires_grad)
        log.info("base %s, %s fine-tune, %s trainable parameters", m.base_model, m.method, f"{count:,}")

    def _place(self, module: Any, dtype: Any) -> None:
        module.to(self.device)
        if module.dtype != dtype:  # casting to the same dtype makes diffusers warn for nothing
            module.to(dtype=dtype)

    def _add_lora(self, unet: Any, text_encoder: Any) -> None:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig, inject_adapter_in_model

        m = self.cfg.model
        alpha = m.lora_alpha or m.lora_rank
        unet.add_adapter(
            LoraConfig(
                r=m.lora_rank,
                lora_alpha=alpha,
                init_lora_weights="gaussian",
                target_modules=m.lora_targets,
            )
        )
        cast_training_params(unet)
        if m.train_text_encoder:
            # peft directly: transformers' own add_adapter insists on a newer peft than the pinned 0.21.
            config = LoraConfig(
                r=m.lora_rank,
                lora_alpha=alpha,
                init_lora_weights="gaussian",
                target_modules=LORA_TEXT_TARGETS,
            )
            inject_adapter_in_model(config, text_encoder)
            cast_training_params(text_encoder)

    def _read_instances(self) -> None:
        d, t = self.cfg.data, self.cfg.train
        if d.instance_dir:
            folder = Path(d.instance_dir).expanduser()
        else:
            folder = write_synthetic_dataset(self.work_dir / "instance-images", d.synthetic_images, t.resolution)
            log.info(
                "no data.instance_dir: using %d generated images of one object in %s",
                d.synthetic_images,
                folder,
            )
        self.instance_images = load_folder(folder, t.resolution, min_side=d.min_side, center_crop=d.center_crop)

    def _setup_data(self) -> None:
        d, t, p = self.cfg.data, self.cfg.train, self.cfg.prior
        self.instance = self._encode(self.instance_images, d.instance_prompt)
        self.prior: CachedImages | None = None
        if p.enabled:
            class_dir = Path(p.class_dir).expanduser() if p.class_dir else self.work_dir / "class-images"
            self.pipe.set_progress_bar_config(disable=True)
            generate_class_images(
                self.pipe,
                class_dir,
                prompt=p.class_prompt,
                wanted=p.num_class_images,
                resolution=t.resolution,
                batch_size=p.sample_batch_size,
                steps=p.sample_steps,
                seed=t.seed,
                device=str(self.device),
            )
            classes = load_folder(class_dir, t.resolution, center_crop=d.center_crop)[: p.num_class_images]
            self.prior = self._encode(classes, p.class_prompt)

    def _encode(self, images: list[Any], prompt: str) -> CachedImages:
        latents = self._encode_images(images)
        embeds, ids = self._encode_prompt(prompt)
        return CachedImages(latents=latents, ids=ids, embeds=embeds)

    def _encode_images(self, images: list[Any]) -> Any:
        """The VAE posterior (mean, std) of each image, and of its mirror when flips are on; computed once."""
        import torch

        variants = [[to_tensor(im) for im in images]]
        if self.cfg.data.random_flip:
            variants.append([to_tensor(im, flip=True) for im in images])
        out = []
        with torch.no_grad():
            for tensors in variants:
                pixels = torch.stack(tensors).to(self.device, dtype=self.weight_dtype)
                dists = [self.pipe.vae.encode(chunk).latent_dist for chunk in pixels.split(8)]
                mean = torch.cat([dist.mean for dist in dists]).float().cpu()
                std = torch.cat([dist.std for dist in dists]).float().cpu()
                out.append(torch.stack([mean, std], dim=1))
        return torch.stack(out)  # [variant, image, (mean|std), C, H, W]

    def _encode_prompt(self, prompt: str) -> tuple[Any, Any]:
        """Token ids, and the embedding too when the text encoder is frozen (then it never changes)."""
        import torch

        tok = self.pipe.tokenizer
        ids = tok(
            prompt,
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        if self.cfg.model.train_text_encoder:
            return None, ids
        with torch.no_grad():
            return self.pipe.text_encoder(ids.to(self.device))[0].float().cpu(), ids

    def _setup_optimizer(self) -> None:
        import torch
        from diffusers.optimization import get_scheduler

        o, t = self.cfg.optimizer, self.cfg.train
        lr = o.learning_rate * (t.batch_size * t.gradient_accumulation_steps if o.scale_lr else 1)
        params = [p for mod in self.trainables for p in mod.parameters() if p.requires_grad]
        optimizer_cls = adam_class(self.device) if o.use_8bit_adam else torch.optim.AdamW
        optimizer = optimizer_cls(
            params, lr=lr, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.weight_decay, eps=o.adam_epsilon
        )
        schedule = get_scheduler(
            o.lr_scheduler,
            optimizer,
            num_warmup_steps=o.lr_warmup_steps,
            num_training_steps=t.max_train_steps,
        )
        prepared = self.accelerator.prepare(*self.trainables, optimizer, schedule)
        self.trainables = list(prepared[: len(self.trainables)])
        self.optimizer, self.lr_schedule = prepared[-2], prepared[-1]
        self.params = params
        checkpoints.save_trainable_only(self.accelerator)

    def _share_state(self) -> None:
        """What loss, validation and export see of the run; after `prepare`, which may wrap the modules."""
        t = self.cfg.train
        self.modules = TrainedModules(
            unet=self.trainables[0],
            text_encoder=self.trainables[1] if self.cfg.model.train_text_encoder else None,
            unwrap=self.accelerator.unwrap_model,
            autocast=self.accelerator.autocast,
        )
        self.loss_inputs = LossInputs(
            modules=self.modules,
            noise_scheduler=self.noise_scheduler,
            vae_scaling=self.pipe.vae.config.scaling_factor,
            instance=self.instance,
            prior=self.prior,
            device=self.device,
            weight_dtype=self.weight_dtype,
            seed=t.seed,
            batch_size=t.batch_size,
            prior_loss_weight=self.cfg.prior.loss_weight,
        )

    def _resume(self) -> None:
        found = checkpoints.resolve_resume(self.work_dir, self.resume)
        if found is None:
            return
        # `latest` falls back to older complete checkpoints when the newest cannot be loaded (disk damage).
        candidates = [found]
        if self.resume == "latest":
            candidates = list(reversed(checkpoints.complete_checkpoints(self.work_dir)))
        for candidate in candidates:
            if candidate.step > self.cfg.train.max_train_steps:
                raise TrainingError(f"{candidate.path} is at step {candidate.step}, past train.max_train_steps")
            try:
                self.accelerator.load_state(str(candidate.path))
            except TrainingError:
                raise
            except Exception as e:  # torch/safetensors raise many types for a damaged file
                log.warning(
                    "cannot load checkpoint %s (%s: %s); trying an older one",
                    candidate.path,
                    type(e).__name__,
                    e,
                )
                continue
            log.info("resumed from %s (step %d)", candidate.path, candidate.step)
            self.step, self.losses, self.train_seconds = (
                candidate.step,
                list(candidate.losses),
                candidate.seconds,
            )
            self.resumed_from = candidate.step
            return
        raise CheckpointError(
            f"no checkpoint in {checkpoints.checkpoints_dir(self.work_dir)} could be loaded; "
            "delete the directory to start over"
        )

    # ---- training ----------------------------------------------------------------------------
    def train(self) -> TrainResult:
        from tqdm.auto import tqdm

        t, c, v = self.cfg.train, self.cfg.checkpoint, self.cfg.validation
        # In a pod's log every redraw is a line: refresh there every 10 s instead of ten times a second.
        refresh = 0.1 if sys.stderr.isatty() else 10.0
        bar = tqdm(
            total=t.max_train_steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            mininterval=refresh,
            file=sys.stderr,
        )
        for module in self.trainables:
            module.train()
        while self.step < t.max_train_steps:
            started = time.perf_counter()
            loss = self._optimizer_step()
            self.train_seconds += time.perf_counter() - started
            self.step += 1
            self.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr_schedule.get_last_lr()[0]:.2e}")
            if self.step % v.every_n_steps == 0 or self.step == t.max_train_steps:
                grid_path = self.work_dir / "validation" / f"step-{self.step:06d}.png"
                save_grid(self.pipe, self.modules, self.cfg, grid_path)
            if self.step % c.every_n_steps == 0 and self.step < t.max_train_steps:
                self.save_checkpoint()
        bar.close()
        done = self.step - self.resumed_from
        per_step = self.train_seconds / self.step if self.step else 0.0
        log.info("trained %d step(s) (%d this run), %.3f s/step", self.step, done, per_step)
        return TrainResult(self.step, list(self.losses), per_step, self.resumed_from)

    def _optimizer_step(self) -> float:
        total = 0.0
        accumulation = self.cfg.train.gradient_accumulation_steps
        for micro in range(accumulation):
            with self.accelerator.accumulate(*self.trainables):
                loss = self._loss(self.step * accumulation + micro)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients:
                    self.accelerator.clip_grad_norm_(self.params, self.cfg.optimizer.max_grad_norm)
                self.optimizer.step()
                self.lr_schedule.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach().item())
        return total / accumulation

    def _loss(self, micro_step: int) -> Any:
        return diffusion_loss(self.loss_inputs, micro_step)

    def _figures_before(self) -> figures.Samples | None:
        """The base model's samples (before any step or resume), when the scorer can judge this subject."""
        if not self.cfg.figures.enabled:
            return None
        try:
            self.scorer = figures.SubjectScorer(self.instance_images, self.cfg.figures.grid)
        except figures.FiguresError as e:  # real photos may share no colour: train anyway, without figures
            log.warning("figures off: %s", e)
            return None
        return figures.draw_trained(self.pipe, self.modules, self.cfg)

    def measure(self, result: TrainResult) -> TrainResult:
        """The figures of the trained weights against the base's (training/figures.py), and their grid."""
        if self.before is None:
            return result
        after = figures.draw_trained(self.pipe, self.modules, self.cfg)
        return replace(result, figures=figures.measure(self.scorer, after, self.before),
                       grid=figures.grid_image(self.before, after))  # fmt: skip

    def save_checkpoint(self) -> Path:
        path = checkpoints.save(
            self.work_dir,
            self.step,
            lambda tmp: self.accelerator.save_state(str(tmp)),
            losses=self.losses,
            seconds=self.train_seconds,
            keep_last=self.cfg.checkpoint.keep_last,
        )
        log.info("checkpoint %s", path)
        return path

    def export(self, result: TrainResult) -> Path:
        return export.write_export(self.output_dir, self.cfg, result, pipe=self.pipe, modules=self.modules)

    def cleanup(self) -> None:
        import torch

        accelerator = getattr(self, "accelerator", None)  # setup may have failed before creating it
        if accelerator is not None:
            accelerator.end_training()
            accelerator.free_memory()
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
