"""Generated Stable Diffusion pipelines with random weights: `tiny`, `small`, `sd15` and `toy`.

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
    unet_layers: int = 2
    vae_layers: int = 1
    text_heads: int = 4
    text_intermediate: int = 0  # 0: twice text_hidden
    save_dtype: str = "float32"  # sd15 is stored in fp16: half the disk, and its loader casts anyway
    pixel_codec: bool = False  # toy: a hand-set VAE that is exact 8x pooling/upsampling (see pixel_codec)
    prediction_type: str = "epsilon"

    @property
    def cache_key(self) -> str:
        return f"{self.name}-v{self.version}"


# tiny: overhead-dominated; a 64 px image in about 0.1 s on one CPU core.
TINY = GeneratedSpec("tiny", 2, (32, 64), (32, 32, 32, 32), 32, 2, 8, unet_layers=1)
# small: compute-bound; a VAE that downsamples by 8 like SD's and a UNet of ~10M parameters.
SMALL = GeneratedSpec("small", 1, (64, 128, 192), (32, 64, 64, 64), 64, 2, 16)
# sd15: Stable Diffusion 1.5's shapes (UNet ~860M parameters, CLIP ViT-L/14's text encoder, the SD
# VAE) with random weights, so a GPU figure costs what SD 1.5 costs without a download. Only the
# vocabulary is small (the generated tokenizer's 514 tokens instead of 49408).
SD15 = GeneratedSpec(
    "sd15", 1, (320, 640, 1280, 1280), (128, 256, 512, 512), 768, 12, 64,
    vae_layers=2, text_heads=12, text_intermediate=3072, save_dtype="float16",
)  # fmt: skip

# toy: tiny's UNet and text encoder (random), behind a VAE that is an exact 8x colour codec instead of
# a random one, so what the UNet learns shows in pixels (docs/training.md, "Does it learn?"). It
# predicts v, as SD 2 does: with epsilon, the colour of a memorised image is set at high noise where
# an error in the predicted noise is amplified ~10x, and 400 steps drew smears (measured).
TOY = GeneratedSpec("toy", 1, (32, 64), (8, 8, 8, 8), 32, 2, 8, unet_layers=1, pixel_codec=True,
                    prediction_type="v_prediction")  # fmt: skip

SPECS: dict[str, GeneratedSpec] = {s.name: s for s in (TINY, SMALL, SD15, TOY)}


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
        "layers_per_block": spec.unet_layers,
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
        "layers_per_block": spec.vae_layers,
        "norm_num_groups": 32,
        "sample_size": spec.sample_size * 2 ** (levels - 1),
    }


_CODEC_K = 8.0  # the constant channels' value: it dominates the one-group GroupNorm, which then divides by ~K/2


def pixel_codec(spec: GeneratedSpec) -> Any:
    """An AutoencoderKL whose weights are set by hand: encode = 8x8 average pooling of RGB, decode = nearest upsampling.

    Every ResNet branch is zeroed (the blocks become identities) and the downsamplers average 2x2. The
    one-group GroupNorm before each conv_out is made linear: channels carry (+x, -x, +K, -K), so the mean
    is 0 and the variance ~K^2/4 whatever x is, and silu(a) - silu(-a) = a undoes the activation. Decoding
    an encoded image returns its 8x8 block means within ~1% (tests/test_training_figures.py).
    """
    import torch
    from diffusers import AutoencoderKL

    channels = spec.vae_channels[0]
    config = {**_vae_config(spec), "norm_num_groups": 1, "scaling_factor": 1.0, "mid_block_add_attention": False}
    vae: Any = AutoencoderKL(**config)  # Any: diffusers' ModelMixin hides torch.nn.Module from mypy
    sigma = _CODEC_K / 2

    def split(conv: Any) -> None:  # x -> (+x, -x, +K, -K) on channels 0-2, 3-5, 6, 7
        for c in range(3):
            conv.weight[c, c, 1, 1], conv.weight[3 + c, c, 1, 1] = 1.0, -1.0
        conv.bias[6], conv.bias[7] = _CODEC_K, -_CODEC_K

    def join(conv: Any) -> None:  # (silu(+x/sigma) - silu(-x/sigma)) * sigma = x
        for c in range(3):
            conv.weight[c, c, 1, 1], conv.weight[c, 3 + c, 1, 1] = sigma, -sigma

    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for module in vae.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.fill_(1.0)
        enc, dec = vae.encoder, vae.decoder
        split(enc.conv_in)
        split(dec.conv_in)
        for block in enc.down_blocks:
            for down in block.downsamplers or []:
                for c in range(channels):
                    down.conv.weight[c, c, 0:2, 0:2] = 0.25  # the input is padded right/bottom: taps 0-1 average
        for block in dec.up_blocks:
            for up in block.upsamplers or []:
                for c in range(channels):
                    up.conv.weight[c, c, 1, 1] = 1.0
        join(enc.conv_out)
        enc.conv_out.bias[4:] = -30.0  # log-variance: sampling the posterior returns its mean
        join(dec.conv_out)
        vae.quant_conv.weight[:, :, 0, 0] = torch.eye(8)
        vae.post_quant_conv.weight[:, :, 0, 0] = torch.eye(4)
    return vae


def build_pipeline(spec: GeneratedSpec) -> Any:
    """Construct the pipeline in memory with seeded random weights (no network, no files)."""

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_unet_config(spec))
    vae = pixel_codec(spec) if spec.pixel_codec else AutoencoderKL(**_vae_config(spec))
    text_config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate or spec.text_hidden * 2,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
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
        prediction_type=spec.prediction_type,
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
        pipe = build_pipeline(spec)
        if spec.save_dtype != "float32":
            import torch

            pipe.to(dtype=getattr(torch, spec.save_dtype))
        pipe.save_pretrained(staging, safe_serialization=True)
        del pipe  # sd15's 4 GB must not outlive the save
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race to a broken target
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
