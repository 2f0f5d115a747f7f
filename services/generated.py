"""Generated Stable Diffusion pipelines with random weights: `tiny` and `small`.

They exist so that everything (serving, training, load tests) runs offline and fast.
Both are built from configs with a fixed seed, so every machine builds the same weights,
and saved as an ordinary diffusers directory that the normal loading path reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GeneratedSpec:
    """The shape of one generated model. Bump `version` whenever a number here changes."""

    name: str
    version: int
    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]
    text_hidden: int
    text_layers: int
    sample_size: int  # latent side the UNet is configured for; diffusers uses it only as the default size

    @property
    def cache_key(self) -> str:
        return f"{self.name}-v{self.version}"


# tiny: overhead-dominated; a 64 px image in about 0.1 s on one CPU core.
TINY = GeneratedSpec("tiny", 2, (32, 64), (32, 32, 32, 32), 32, 2, 8)
# small: compute-bound; a VAE that downsamples by 8 like SD's and a UNet of ~10M parameters.
SMALL = GeneratedSpec("small", 1, (64, 128, 192), (32, 64, 64, 64), 64, 2, 16)

SPECS: dict[str, GeneratedSpec] = {s.name: s for s in (TINY, SMALL)}


def _byte_unicode() -> list[str]:
    """CLIP's byte-to-unicode table: printable characters for all 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer_files(directory: Path) -> None:
    """A byte-level BPE vocabulary small enough to write by hand: every byte, alone and word-final.

    With no merges, every prompt tokenizes to one token per byte, which is all a random-weight
    text encoder needs, and it keeps CLIPTokenizer's real code path (BPE, padding, truncation).
    """
    chars = _byte_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _unet_config(spec: GeneratedSpec) -> dict[str, Any]:
    levels = len(spec.unet_channels)
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    return {
        "sample_size": spec.sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": list(spec.unet_channels),
        "layers_per_block": 1 if spec is TINY else 2,
        "down_block_types": down,
        "up_block_types": up,
        "cross_attention_dim": spec.text_hidden,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


def _vae_config(spec: GeneratedSpec) -> dict[str, Any]:
    levels = len(spec.vae_channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": list(spec.vae_channels),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "sample_size": spec.sample_size * 2 ** (levels - 1),
    }


def build_pipeline(spec: GeneratedSpec) -> Any:
    """Construct the pipeline in memory with seeded random weights (no network, no files)."""

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_unet_config(spec))
    vae = AutoencoderKL(**_vae_config(spec))
    text_config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_hidden * 2,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    text_encoder = CLIPTextModel(text_config)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def materialize(spec: GeneratedSpec, cache_dir: Path) -> Path:
    """Build the model once into `cache_dir/<name>-v<version>` and return that directory.

    It is saved to a temporary sibling and renamed into place, so a crash or a concurrent
    builder never leaves a half-written model that a later load would trust.
    """

    target = cache_dir / spec.cache_key
    if (target / "model_index.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.cache_key}-", dir=cache_dir))
    try:
        build_pipeline(spec).save_pretrained(staging, safe_serialization=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race to a broken target
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
