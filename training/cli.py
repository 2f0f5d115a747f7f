"""`python -m training`: run the recipe in this process (what the cluster Job and the CLI run).

Exit codes: 0 done, 1 a training error (message on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dogbooth.core.errors import DogboothError
from training import config as config_mod
from training.run import run


def add_run_args(p: argparse.ArgumentParser, *, base_model_flag: bool = True) -> None:
    """The flags shared by `python -m training` and `python -m dogbooth train` (whose --model is the base)."""
    p.add_argument("--instance-dir", type=Path, help="folder of instance images (default: generated dataset)")
    p.add_argument("--instance-prompt", help="e.g. 'a photo of sks dog'")
    if base_model_flag:
        p.add_argument("--base-model", help="tiny, small, a directory, or org/name[@revision]")
    p.add_argument("--method", choices=["full", "lora"], help="full fine-tune or LoRA")
    p.add_argument("--max-train-steps", type=int, help="optimizer steps in total (a resumed run counts from 0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--output", type=Path, help="export directory; checkpoints go to <output>.work")
    p.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N steps")
    p.add_argument("--validate-every", type=int, help="save a validation grid every N steps")
    p.add_argument("--hub-repo", help="push the export to this Hub repo (needs HF_TOKEN)")
    p.add_argument(
        "--no-prior-preservation",
        dest="prior_enabled",
        action="store_const",
        const=False,
        help="train on the instance images alone (prior.enabled: false), e.g. to compare class_leakage",
    )
    p.add_argument("--resume", help="'latest' (newest complete checkpoint, if any) or a checkpoint directory")


def overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {flag: getattr(a, flag, None) for flag in config_mod.OVERRIDES}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description="DreamBooth fine-tuning (one run)")
    p.add_argument("--config", default="local", help="training/configs/<name>.yaml, or a YAML file path")
    add_run_args(p)
    return p


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth: %(message)s", stream=sys.stderr)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file is noise
    signal.signal(signal.SIGTERM, _interrupt)  # a Job's SIGTERM ends like Ctrl-C: the last checkpoint stays
    args = parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config, overrides(args))
        summary = run(cfg, resume=args.resume)
    except DogboothError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    print(summary.describe(), flush=True)
    return 0
