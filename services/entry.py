"""Serve's import path for the app builder: `services.entry:build_app`.

A hot reload must build from the files on disk now. Ray may run the build task in a worker that
imported `services/` earlier, so this drops `services.*` from `sys.modules` before importing the
app: a reused worker then builds (and ships to the replicas) the current code, never a stale one.
"""

import importlib
import sys
from typing import Any


def build_app(args: dict[str, Any]) -> Any:
    for name in [m for m in sys.modules if m.startswith("services.") and m != __name__]:
        del sys.modules[name]
    importlib.invalidate_caches()
    from services import app

    return app.build_app(args)
