"""Data preparation: instance and class images read from folders, sized, de-duplicated, checked.

Every problem is a DataError naming the file, raised before any training step runs. Without an
instance folder, a small generated dataset (one distinctive object on varied backgrounds) stands in,
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


def _draw_object(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    """The one distinctive object: a magenta disc with a yellow ring and a black cross."""
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 20, 160))
    ring = r * 0.6
    draw.ellipse((cx - ring, cy - ring, cx + ring, cy + ring), outline=(250, 220, 0), width=max(1, int(r / 5)))
    bar = max(1, int(r / 6))
    draw.rectangle((cx - r * 0.9, cy - bar / 2, cx + r * 0.9, cy + bar / 2), fill=(0, 0, 0))
    draw.rectangle((cx - bar / 2, cy - r * 0.9, cx + bar / 2, cy + r * 0.9), fill=(0, 0, 0))


def synthetic_images(count: int, resolution: int, seed: int = 0) -> list[Image.Image]:
    """`count` images of the same object at varied places, sizes and backgrounds; deterministic per seed."""
    rng = random.Random(seed)
    images = []
    for _ in range(count):
        top = tuple(rng.randrange(40, 200) for _ in range(3))
        bottom = tuple(rng.randrange(40, 200) for _ in range(3))
        image = Image.new("RGB", (resolution, resolution))
        draw = ImageDraw.Draw(image)
        for y in range(resolution):  # a vertical gradient: the background varies, the object does not
            t = y / max(1, resolution - 1)
            draw.line(
                [(0, y), (resolution, y)],
                fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
            )
        r = resolution * rng.uniform(0.22, 0.32)
        cx, cy = rng.uniform(r, resolution - r), rng.uniform(r, resolution - r)
        _draw_object(draw, cx, cy, r)
        images.append(image)
    return images


def write_synthetic_dataset(folder: Path, count: int, resolution: int, seed: int = 0) -> Path:
    """Materialise the generated dataset as PNGs (so it goes through the same checks as real data)."""
    if len(image_files(folder) if folder.is_dir() else []) == count:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    for i, image in enumerate(synthetic_images(count, resolution, seed)):
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
