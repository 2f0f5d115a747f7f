"""Data preparation: instance and class images read from folders, sized, de-duplicated, checked.

Every problem is a DataError naming the file, raised before any training step runs. Without an
instance folder, a small generated dataset (one distinctive two-colour checker, jittered) stands in,
so the whole recipe runs offline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from training.errors import DataError

log = logging.getLogger("dogbooth.training.data")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def image_files(folder: Path) -> list[Path]:
    """Image files in `folder`, sorted; other files are skipped with a log line."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory (give a folder of images)")
    files: list[Path] = []
    skipped: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        (files if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(path)
    if skipped:
        log.info("%s: skipping %d non-image file(s): %s", folder, len(skipped), ", ".join(p.name for p in skipped))
    return files


def prepare(image: Image.Image, resolution: int, *, center_crop: bool = True) -> Image.Image:
    """RGB, shorter side scaled to `resolution`, then centre-cropped (or squashed) to a square."""
    image = image.convert("RGB")
    if not center_crop:
        return image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    scale = resolution / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e}); remove or replace the file") from e


def load_folder(
    folder: Path, resolution: int, *, min_side: int | None = None, center_crop: bool = True
) -> list[Image.Image]:
    """Read, check and prepare every image in `folder`; exact duplicates (same pixels) are dropped."""
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder}: no images (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    smallest = min_side or resolution
    images: list[Image.Image] = []
    seen: dict[str, Path] = {}
    for path in files:
        raw = _open(path)
        if min(raw.size) < smallest:
            raise DataError(
                f"{path}: {raw.width}x{raw.height} px is too small; "
                f"every side must be at least {smallest} px "
                "(upscaled images teach the model blur)"
            )
        digest = hashlib.sha256(raw.convert("RGB").tobytes()).hexdigest()
        if digest in seen:
            log.info("%s: duplicate of %s, dropped", path.name, seen[digest].name)
            continue
        seen[digest] = path
        images.append(prepare(raw, resolution, center_crop=center_crop))
    log.info(
        "%s: %d image(s) at %d px (%d duplicate(s) dropped)",
        folder,
        len(images),
        resolution,
        len(files) - len(images),
    )
    return images


# Magenta and teal: away from the saturated corners a noisy model's clamped output hits, and at the
# centres of training/figures.py's colour bins, so a slightly-off colour still counts as the subject's.
SUBJECT_COLOURS = ((224, 32, 160), (32, 160, 224))


def synthetic_images(count: int, resolution: int, seed: int = 0) -> list[Image.Image]:
    """`count` images of one subject, a two-colour checker, with jitter; deterministic per seed.

    The checker (2x2 squares, each a quarter of the side) sits at a jittered place on a grid of
    `resolution / 8` px, on a plain grey of jittered brightness. The grid is the `toy` model's codec
    block, so the subject survives its 8x pooling exactly; the colours are ones a grey background never
    takes, which is what lets training/figures.py find the subject without a learned model.
    """
    rng = random.Random(seed)
    cell, square = resolution // 8, resolution // 4
    images = []
    for _ in range(count):
        grey = rng.randrange(96, 160)
        image = Image.new("RGB", (resolution, resolution), (grey, grey, grey))
        draw = ImageDraw.Draw(image)
        x0, y0 = cell * rng.randrange(1, 4), cell * rng.randrange(1, 4)
        for i in range(2):
            for j in range(2):
                left, top = x0 + i * square, y0 + j * square
                draw.rectangle((left, top, left + square - 1, top + square - 1), fill=SUBJECT_COLOURS[(i + j) % 2])
        images.append(image)
    return images


def write_synthetic_dataset(folder: Path, count: int, resolution: int, seed: int = 0) -> Path:
    """Materialise the generated dataset as PNGs (so it goes through the same checks as real data).

    An existing folder is kept only when it holds exactly these images: a work directory from an older
    version of the generator must not train on the old subject.
    """
    images = synthetic_images(count, resolution, seed)
    existing = image_files(folder) if folder.is_dir() else []
    if len(existing) == count and all(
        _open(f).tobytes() == im.tobytes() for f, im in zip(existing, images, strict=True)
    ):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    for i, image in enumerate(images):
        image.save(staging / f"object-{i:03d}.png")
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(staging, folder)
    return folder


def to_tensor(image: Image.Image, *, flip: bool = False) -> Any:
    """CHW float tensor in [-1, 1], what the VAE expects."""
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if flip:
        array = array[:, ::-1]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def generate_class_images(
    pipe: Any,
    folder: Path,
    *,
    prompt: str,
    wanted: int,
    resolution: int,
    batch_size: int,
    steps: int,
    seed: int,
    device: str,
) -> int:
    """Top `folder` up to `wanted` images of `prompt` from the base model; returns how many were made.

    Each image is written under a temporary name and renamed, so an interrupted run leaves only whole files.
    """
    import torch
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    have = len(image_files(folder))
    missing = wanted - have
    if missing <= 0:
        return 0
    log.info("prior preservation: generating %d class image(s) of %r into %s", missing, prompt, folder)
    made = 0
    with tqdm(total=missing, desc="class images") as bar:
        while made < missing:
            n = min(batch_size, missing - made)
            generator = torch.Generator(device="cpu").manual_seed(seed + have + made)
            with torch.inference_mode():
                out = pipe(
                    prompt=[prompt] * n,
                    num_inference_steps=steps,
                    height=resolution,
                    width=resolution,
                    generator=generator,
                    output_type="pil",
                )
            for image in out.images:
                index = have + made
                tmp = folder / f".class-{index:05d}.png.tmp"
                image.save(tmp, format="PNG")
                os.replace(tmp, folder / f"class-{index:05d}.png")
                made += 1
            bar.update(n)
    return made
