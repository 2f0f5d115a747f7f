"""`sd15`: Stable Diffusion 1.5's architecture with random weights (services/generated.py).

The shapes are checked on torch's meta device (no memory, no time). The smoke run builds and serves
the real thing on the CPU at 64 px and one step; it takes minutes and ~10 GB, so it runs only with
DOGBOOTH_RUN_SLOW=1 (as diffusers' own slow tests run only with RUN_SLOW=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services import generated
from services.models import parse_model_ref

slow = pytest.mark.skipif(not os.environ.get("DOGBOOTH_RUN_SLOW"), reason="slow: set DOGBOOTH_RUN_SLOW=1")


def test_sd15_is_a_generated_model() -> None:
    assert parse_model_ref("sd15").kind == "generated"
    assert generated.SD15.cache_key == "sd15-v1" and generated.SD15.save_dtype == "float16"


def test_sd15_has_sd_15s_unet_vae_and_a_clip_vit_l_text_encoder() -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**generated._unet_config(generated.SD15))
        vae = AutoencoderKL(**generated._vae_config(generated.SD15))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 859_520_964  # runwayml/stable-diffusion-v1-5's UNet, to the parameter
    assert count(vae) == 83_653_863
    assert unet.config.cross_attention_dim == 768 and vae.config.scaling_factor == 0.18215


def test_sd15_text_encoder_is_vit_l_14_shaped_with_the_small_vocabulary() -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = generated.SD15
    config = CLIPTextConfig(vocab_size=514, hidden_size=spec.text_hidden, intermediate_size=spec.text_intermediate,
                            num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads)  # fmt: skip
    with torch.device("meta"):
        encoder = CLIPTextModel(config)
    assert (spec.text_hidden, spec.text_intermediate, spec.text_layers, spec.text_heads) == (768, 3072, 12, 12)
    # ViT-L/14's 123M less its 49408-token embedding (37.9M): only the vocabulary is small.
    assert sum(p.numel() for p in encoder.parameters()) == 123_060_480 - (49408 - 514) * 768


def test_tiny_and_small_keep_their_shapes() -> None:
    """The spec gained fields with defaults: the existing models' weights (and cache keys) must not move."""
    assert (generated.TINY.unet_layers, generated.TINY.vae_layers, generated.TINY.cache_key) == (1, 1, "tiny-v2")
    assert (generated.SMALL.unet_layers, generated.SMALL.vae_layers, generated.SMALL.cache_key) == (2, 1, "small-v1")
    assert generated._unet_config(generated.SMALL)["layers_per_block"] == 2


@slow
def test_bench_builds_and_serves_sd15_on_the_cpu(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "dogbooth", "bench", "--models", "sd15", "--device", "cpu", "--steps", "1",
               "--size", "64", "--duration", "1", "--report-dir", str(tmp_path)]  # fmt: skip
    subprocess.run(command, check=True, timeout=1800)
    summary = json.loads((tmp_path / "summary.json").read_text())["sd15"]
    assert summary["served_images_per_s"] > 0 and summary["served_failures"] == 0
    assert summary["image"] == {"side": 64, "steps": 1} and summary["raw_best_images_per_s"] > 0
