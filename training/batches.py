"""One micro-batch and its DreamBooth loss, drawn deterministically from (seed, micro-step).

Images are visited in a fresh permutation each epoch; noise, timesteps, latent samples and flips all
come from a CPU generator seeded per micro-step. That makes a run reproducible on any device and makes
resuming exact without saving RNG state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.recipe import DreamBoothRecipe

_STRIDE = 1_000_003  # a prime: (seed, step) pairs never collide for any realistic run length


def _generator(seed: int, index: int, stream: int) -> Any:
    import torch

    return torch.Generator(device="cpu").manual_seed((seed * _STRIDE + index) * 4 + stream)


def epoch_indices(count: int, batch_size: int, micro_step: int, seed: int) -> list[int]:
    """The dataset positions of one micro-batch: each epoch is a seeded permutation, visited in order."""
    import torch

    picks = []
    for j in range(batch_size):
        position = micro_step * batch_size + j
        epoch, offset = divmod(position, count)
        order = torch.randperm(count, generator=_generator(seed, epoch, 3))
        picks.append(int(order[offset]))
    return picks


def _sample_latents(cache: Any, indices: list[int], gen: Any, scaling: float) -> Any:
    """Sample from each image's cached VAE posterior (mirrored variant chosen at random when present)."""
    import torch

    variants = cache.shape[0]
    chosen = torch.randint(variants, (len(indices),), generator=gen) if variants > 1 else [0] * len(indices)
    stats = torch.stack([cache[int(v), i] for v, i in zip(chosen, indices, strict=True)])
    mean, std = stats[:, 0], stats[:, 1]
    return (mean + std * torch.randn(mean.shape, generator=gen)) * scaling


def _embeddings(recipe: DreamBoothRecipe, cached: Any, ids: Any, n: int) -> Any:
    if cached is not None:
        return cached.expand(n, -1, -1).to(recipe.device)
    text_encoder = recipe.trainables[1]
    return text_encoder(ids.expand(n, -1).to(recipe.device))[0]


def diffusion_loss(recipe: DreamBoothRecipe, micro_step: int) -> Any:
    """Noise-prediction MSE on instance images, plus the weighted prior loss on class images."""
    import torch
    import torch.nn.functional as F

    cfg = recipe.cfg
    seed, batch = cfg.train.seed, cfg.train.batch_size
    gen = _generator(seed, micro_step, 0)
    scaling = recipe.pipe.vae.config.scaling_factor
    inst = epoch_indices(recipe.instance_latents.shape[1], batch, micro_step, seed)
    latents = [_sample_latents(recipe.instance_latents, inst, gen, scaling)]
    embeds = [_embeddings(recipe, recipe.instance_embeds, recipe.instance_ids, batch)]
    if recipe.class_latents is not None:
        cls = epoch_indices(recipe.class_latents.shape[1], batch, micro_step, seed + 1)
        latents.append(_sample_latents(recipe.class_latents, cls, gen, scaling))
        embeds.append(_embeddings(recipe, recipe.class_embeds, recipe.class_ids, batch))
    x0 = torch.cat(latents)
    noise = torch.randn(x0.shape, generator=gen)
    steps = torch.randint(0, recipe.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    scheduler = recipe.noise_scheduler
    noisy = scheduler.add_noise(x0, noise, steps)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(x0, noise, steps) if v_prediction else noise
    device = recipe.device
    unet = recipe.trainables[0]
    with recipe.accelerator.autocast():
        prediction = unet(
            noisy.to(device, dtype=recipe.weight_dtype),
            steps.to(device),
            torch.cat(embeds).to(dtype=recipe.weight_dtype),
        ).sample
    target = target.to(device)
    if recipe.class_latents is None:
        return F.mse_loss(prediction.float(), target.float())
    pred_inst, pred_prior = prediction.float().chunk(2)
    target_inst, target_prior = target.float().chunk(2)
    prior = F.mse_loss(pred_prior, target_prior)
    return F.mse_loss(pred_inst, target_inst) + cfg.prior.loss_weight * prior
