"""`python -m dogbooth <command>`: what the nox sessions call. Parsing here, logic in the modules."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dogbooth import REPO_ROOT, profiles
from dogbooth.errors import DogboothError
from dogbooth.profiles import Profile

log = logging.getLogger("dogbooth")


def load_profile(name: str, *, model: str | None = None, port: int | None = None) -> Profile:
    """A profile by name, or by path to a YAML file; with command-line overrides applied."""
    path = Path(name)
    profile = profiles.load_file(path) if path.suffix in {".yaml", ".yml"} else profiles.load(name)
    return profiles.with_overrides(profile, model=model, port=port)


def _profile_args(p: argparse.ArgumentParser, *, default: str | None = "local") -> None:
    p.add_argument("--profile", default=default, help=f"one of {', '.join(profiles.available())}, or a file")
    p.add_argument("--model", help="model reference: tiny, small, a directory, or org/name[@revision]")
    p.add_argument("--port", type=int, help="HTTP port of the Serve endpoint")
    p.add_argument("--source-root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)


def cmd_up(a: argparse.Namespace) -> None:
    from dogbooth import local

    profile = load_profile(a.profile, model=a.model, port=a.port)
    endpoint = local.up(profile, source_root=a.source_root.resolve())
    print(f"endpoint: {endpoint}", flush=True)


def cmd_down(a: argparse.Namespace) -> None:
    from dogbooth import local

    profile = load_profile(a.profile)
    local.down(profile.name)


def cmd_dev(a: argparse.Namespace) -> None:
    from dogbooth import devloop

    name = a.profile
    if name is None:
        name, reason = devloop.choose_profile()
        print(f"dogbooth dev: profile {name} ({reason})", flush=True)
    profile = load_profile(name, model=a.model, port=a.port)
    devloop.run(profile, a.source_root.resolve())


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str]] = {
    "up": (cmd_up, "bring a profile up detached; prints the endpoint once ready"),
    "down": (cmd_down, "stop what up or dev started for a profile (idempotent)"),
    "dev": (cmd_dev, "foreground dev loop with hot reload of services/"),
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dogbooth")
    sub = root.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        _profile_args(p, default=None if name == "dev" else "local")
    return root


def _raise_keyboard_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="dogbooth: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # teardown runs on SIGTERM too
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command][0](args)
    except DogboothError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
