"""The request mix of the load test: what a population of dogbooth users asks for.

Pure Python (no Locust), so the runner can derive it from a profile and tests can check it.
The runner passes it to the Locust processes as JSON in `DOGBOOTH_LT_MIX`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

MIX_ENV = "DOGBOOTH_LT_MIX"
SHAPE_NAMES = ("steady", "step", "spike")  # loadtest/shapes.py, in this order

# DreamBooth prompts use the rare token the model was tuned on ("sks"), as users of a fine-tuned
# dogbooth model would; the rest are the generic prompts people try first.
PROMPTS: tuple[str, ...] = (
    "a photo of sks dog",
    "a photo of sks dog in a bucket",
    "a photo of sks dog on the beach at sunset",
    "sks dog wearing a red scarf, studio portrait, soft light",
    "an oil painting of sks dog in the style of Rembrandt",
    "a watercolor of sks dog sleeping on a couch",
    "sks dog as an astronaut floating in space, digital art",
    "a close-up photo of sks dog's nose, shallow depth of field",
    "sks dog running through autumn leaves in a park",
    "a pixel-art sprite of sks dog",
    "a corgi reading a newspaper in a cafe",
    "a golden retriever puppy in the snow, 35mm photo",
    "a dog surfing a big wave, action shot",
    "a cute dog in a tiny chef's hat baking bread",
    "a husky under the northern lights, long exposure",
    "a line drawing of a dachshund",
)
NEGATIVE_PROMPTS: tuple[str, ...] = ("blurry, low quality", "extra legs, deformed", "text, watermark")
# A few users regenerate with a seed they liked; most let the server pick or send a fresh one.
FAVOURITE_SEEDS: tuple[int, ...] = (0, 7, 42, 1234, 31337)


@dataclass(frozen=True)
class Mix:
    """Sizes and steps to draw from; the first of each is the common case (the profile's default).

    Empty lists mean "leave it to the server's defaults" (a `--host` run without a profile).
    """

    sizes: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    common_share: float = 0.8  # share of requests at the first size and first step count

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str | None) -> Mix:
        data: dict[str, Any] = json.loads(text) if text else {}
        return cls(**data)

    def _pick(self, rng: random.Random, values: list[int]) -> int | None:
        if not values:
            return None
        if len(values) == 1 or rng.random() < self.common_share:
            return values[0]
        return rng.choice(values[1:])

    def request(self, rng: random.Random) -> dict[str, Any]:
        """One `/imagine` request's parameters (GET query or POST body alike)."""
        params: dict[str, Any] = {"prompt": rng.choice(PROMPTS)}
        roll = rng.random()
        if roll < 0.1:
            params["seed"] = rng.choice(FAVOURITE_SEEDS)
        elif roll < 0.9:
            params["seed"] = rng.randrange(2**32)
        if rng.random() < 0.25:
            params["negative_prompt"] = rng.choice(NEGATIVE_PROMPTS)
        side, steps = self._pick(rng, self.sizes), self._pick(rng, self.steps)
        if side is not None:
            params["img_size"] = side
        if steps is not None:
            params["steps"] = steps
        if rng.random() < 0.1:
            params["format"] = rng.choice(("jpeg", "webp"))
        return params


def request_name(params: dict[str, Any]) -> str:
    """Locust's row name: one row per image size and step count, never one per prompt or seed."""
    side = params.get("img_size")
    steps = params.get("steps")
    size = f"{side}px" if side else "default size"
    count = f"{steps} steps" if steps else "default steps"
    return f"/imagine [{size}, {count}]"


def mix_for(width: int, height: int, steps: int, max_side: int, max_steps: int) -> Mix:
    """The mix for a profile: mostly its default image, sometimes a larger one or a quick draft."""
    side = max(width, height)
    larger = min(max_side, (side * 3 // 2) // 8 * 8)
    sizes = [side] + ([larger] if larger > side else [])
    draft = max(1, steps // 2)
    return Mix(sizes=sizes, steps=[min(steps, max_steps)] + ([draft] if draft < steps else []))
