"""Subject fidelity: how much generated images look like the instance images, in [-1, 1].

An embedding model maps each image to a vector; the score is the mean cosine similarity between every
generated image and the subject: the normalised mean of the instance images' embeddings (in the spirit
of DreamBooth's CLIP-I/DINO metrics, which average over instance images).

Two embedders:
- `pixels` (default, offline): joint colour histogram + a coarse 8x8 layout of the image, each
  normalised. Deterministic and download-free, so it works on this machine and in CI. It measures
  colour and layout likeness, not identity: fine for the generated object of the local dataset and
  as a smoke gate, too weak to judge a real dog. The tiny model's weights are random, so a CLIP
  model built from them would be meaningless; this is the honest offline choice.
- `clip:<hub id>` (e.g. `clip:openai/clip-vit-base-patch32`): CLIP image embeddings through
  transformers; what a cluster with Hub access should use (pin a revision with `@<commit>`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dogbooth.core.errors import DogboothError

log = logging.getLogger("dogbooth.commands.pipeline.score")

_LAYOUT = 8  # side of the downsampled image in the layout feature
_BINS = 8  # per channel in the joint RGB histogram


class ScorerError(DogboothError):
    """The scorer name is unknown or its model cannot be loaded; the message says what to use."""


Embedder = Callable[[Sequence[Any]], Any]  # PIL images -> (n, d) float array, rows L2-normalised


def _unit(rows: Any) -> Any:
    import numpy as np

    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def pixel_embed(images: Sequence[Any]) -> Any:
    """Joint RGB histogram (sqrt, so one dominant colour does not swamp the rest) + centred 8x8 layout."""
    import numpy as np

    hists, layouts = [], []
    for image in images:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        index = np.minimum((rgb * _BINS).astype(int), _BINS - 1)
        flat = index[..., 0] * _BINS * _BINS + index[..., 1] * _BINS + index[..., 2]
        hist = np.bincount(flat.ravel(), minlength=_BINS**3).astype(np.float32)
        hists.append(np.sqrt(hist / hist.sum()))
        small = np.asarray(image.convert("RGB").resize((_LAYOUT, _LAYOUT)), dtype=np.float32) / 127.5 - 1
        layouts.append(small.ravel() - small.mean())
    return _unit(np.concatenate([_unit(np.stack(hists)), _unit(np.stack(layouts))], axis=1))


def _clip_embedder(model_ref: str) -> Embedder:
    try:
        import torch
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as e:
        raise ScorerError(f"scorer clip:{model_ref} needs transformers and torch: {e}") from e
    name, _, revision = model_ref.partition("@")
    revision = revision or "main"
    try:
        model = CLIPModel.from_pretrained(name, revision=revision).eval()
        processor = CLIPProcessor.from_pretrained(name, revision=revision)
    except OSError as e:
        raise ScorerError(
            f"scorer clip:{model_ref}: cannot load the model ({e}); offline, use the `pixels` scorer"
        ) from e

    def embed(images: Sequence[Any]) -> Any:
        with torch.inference_mode():
            inputs = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
            return _unit(model.get_image_features(**inputs).float().numpy())

    return embed


def embedder(name: str) -> Embedder:
    """`pixels`, or `clip:<hub id>[@revision]`."""
    if name == "pixels":
        return pixel_embed
    if name.startswith("clip:") and len(name) > len("clip:"):
        return _clip_embedder(name.removeprefix("clip:"))
    raise ScorerError(
        f"scorer {name!r} is unknown: use `pixels` or `clip:<hub id>`, e.g. clip:openai/clip-vit-base-patch32"
    )


def fidelity(generated: Sequence[Any], instances: Sequence[Any], embed: Embedder) -> float:
    """Mean cosine similarity of the generated images to the subject: the instances' mean embedding.

    The mean keeps what the instance images share (the subject) and averages out what varies
    (backgrounds, poses), so a generated image is not punished for a new background.
    """
    import numpy as np

    if not generated or not instances:
        raise ScorerError("fidelity needs at least one generated and one instance image")
    subject = embed(instances).mean(axis=0)
    subject = subject / max(float(np.linalg.norm(subject)), 1e-12)
    return float((embed(generated) @ subject).mean())
