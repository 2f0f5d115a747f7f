"""One micro-batch and its DreamBooth loss, drawn deterministically from (seed, micro-step).

Images are visited in a fresh permutation each epoch; noise, timesteps, latent samples and flips all
come from a CPU generator seeded per micro-step. That makes a run reproducible on any device and makes
resuming exact without saving RNG state.
"""

from __future__ import annotations

from typing import Any

from training.errors import TrainingError
from training.state import CachedImages, LossInputs

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


def _embeddings(inputs: LossInputs, images: CachedImages, n: int) -> Any:
    if images.embeds is not None:
        return images.embeds.expand(n, -1, -1).to(inputs.device)
    text_encoder = inputs.modules.text_encoder
    if text_encoder is None:  # the recipe caches embeddings exactly when the text encoder is frozen
        raise TrainingError("no cached prompt embeddings and no text encoder to compute them")
    return text_encoder(images.ids.expand(n, -1).to(inputs.device))[0]


def diffusion_loss(inputs: LossInputs, micro_step: int) -> Any:
    """Noise-prediction MSE on instance images, plus the weighted prior loss on class images."""
    import torch
    import torch.nn.functional as F

    seed, batch = inputs.seed, inputs.batch_size
    gen = _generator(seed, micro_step, 0)
    scaling = inputs.vae_scaling
    instance, prior = inputs.instance, inputs.prior
    inst = epoch_indices(instance.latents.shape[1], batch, micro_step, seed)
    latents = [_sample_latents(instance.latents, inst, gen, scaling)]
    embeds = [_embeddings(inputs, instance, batch)]
    if prior is not None:
        cls = epoch_indices(prior.latents.shape[1], batch, micro_step, seed + 1)
        latents.append(_sample_latents(prior.latents, cls, gen, scaling))
        embeds.append(_embeddings(inputs, prior, batch))
    x0 = torch.cat(latents)
    noise = torch.randn(x0.shape, generator=gen)
    steps = torch.randint(0, inputs.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    scheduler = inputs.noise_scheduler
    noisy = scheduler.add_noise(x0, noise, steps)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(x0, noise, steps) if v_prediction else noise
    device = inputs.device
    with inputs.modules.autocast():
        prediction = inputs.modules.unet(
            noisy.to(device, dtype=inputs.weight_dtype),
            steps.to(device),
            torch.cat(embeds).to(dtype=inputs.weight_dtype),
        ).sample
    target = target.to(device)
    if prior is None:
        return F.mse_loss(prediction.float(), target.float())
    pred_inst, pred_prior = prediction.float().chunk(2)
    target_inst, target_prior = target.float().chunk(2)
    prior_loss = F.mse_loss(pred_prior, target_prior)
    return F.mse_loss(pred_inst, target_inst) + inputs.prior_loss_weight * prior_loss
