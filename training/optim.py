"""The optimizer class: torch AdamW, or bitsandbytes' 8-bit AdamW where it can run."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("dogbooth.training")


def adam_class(device: Any) -> Any:
    """8-bit AdamW on a CUDA device with bitsandbytes installed; otherwise torch AdamW, with a warning."""
    import torch

    if not torch.cuda.is_available() or device.type != "cuda":
        log.warning("optimizer.use_8bit_adam: needs a CUDA GPU; using torch AdamW (optimizer state x4 larger)")
        return torch.optim.AdamW
    try:
        import bitsandbytes as bnb
    except ImportError:
        log.warning(
            "optimizer.use_8bit_adam: bitsandbytes is not installed (`pip install bitsandbytes`); "
            "using torch AdamW, whose state takes ~4x the memory"
        )
        return torch.optim.AdamW
    log.info("using bitsandbytes 8-bit AdamW")
    return bnb.optim.AdamW8bit
