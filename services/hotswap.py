"""In-process hot reload: a running replica imports the edited handler code and keeps its loaded model.

A replica restart costs a fresh worker process importing torch and diffusers, then loading and
warming the model (~5-9 s on a 2-core machine). When an edit leaves the model's code alone (every
module in KEPT is unchanged on disk), the replica instead imports the edited modules itself and
runs the new class's constructor on its own instance: the pipeline comes back from the process's
cache (services/pipeline.py `loaded_generator`) and the warm-up is skipped. That takes well under
a second.

The local dev loop asks for it through Serve's `user_config`: a new value there makes Serve call
`reconfigure` on the running replicas and nothing else, because Serve's code version hashes the
import path, runtime_env and args, not `user_config` (ray/serve/_private/deploy_utils.py
`get_app_code_version`). An edit to a KEPT module changes the runtime_env instead, which restarts
the replicas (services/entry.py); so does Tilt's live_update in a cluster (dogbooth/platforms/reload.py).

A broken edit (an import error, a constructor that raises) leaves the replica exactly as it was:
the old code keeps serving and `/readyz` reports the error under `reload`.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

from services.revision import SERVICES_DIR, code_revision

log = logging.getLogger("dogbooth.hotswap")

PACKAGE = "services"
# The model's code and this machinery. The process keeps these modules (and so the loaded pipeline
# and the admission's types) across an in-process reload; an edit to one needs a fresh replica.
KEPT = frozenset({
    "__init__", "admission", "entry", "generated", "hotswap", "models", "pipeline", "revision", "schemas",
})  # fmt: skip
APP_MODULE = "services.app"
REVISION_KEY = "revision"  # the key of the code revision in the deployment's user_config
# The key of the deployed config's fingerprint in user_config. The replica only echoes it (`/readyz`,
# under `reload`), so the deployer can tell a replica of its own deploy from one of the deploy before:
# a change of model or options alone keeps the code revision. It never causes a reload by itself.
CONFIG_KEY = "config"


def needs_restart(changed: Iterable[str]) -> bool:
    """Whether edits to these files (paths relative to services/) need a fresh replica process."""
    return any(name.removesuffix(".py").replace("/", ".") in KEPT for name in changed)


def _kept_digest() -> str:
    digest = hashlib.sha256()
    for name in sorted(KEPT):
        path = SERVICES_DIR / f"{name}.py"
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-"))
    return digest.hexdigest()


_KEPT_AT_START = _kept_digest()  # the KEPT modules this process runs: it imported them just now
_status: dict[str, Any] = {"wanted": None, "error": None, "seconds": None, CONFIG_KEY: None}


def status() -> dict[str, Any]:
    """What `/readyz` reports: the revision last asked for, why it is not served (None when it is), and
    the fingerprint of the config Serve last gave this replica."""
    return dict(_status)


class Refused(RuntimeError):
    """This replica cannot take the edit in-process; a restart can."""


def _import_fresh() -> Any:
    """Import services.app (and every module it imports outside KEPT) from the files on disk now."""
    dropped = {n: m for n, m in sys.modules.items() if n.startswith(f"{PACKAGE}.") and n.split(".", 1)[1] not in KEPT}
    for name in dropped:
        del sys.modules[name]
    importlib.invalidate_caches()
    try:
        return importlib.import_module(APP_MODULE)
    except BaseException:
        for name in [n for n in sys.modules if n.startswith(f"{PACKAGE}.") and n.split(".", 1)[1] not in KEPT]:
            del sys.modules[name]
        sys.modules.update(dropped)  # the old code keeps serving, with the modules it was built from
        raise


async def reload(replica: Any, config: dict[str, Any] | None, running: str, args: dict[str, Any]) -> None:
    """Swap `replica` (a Serve replica's instance, running code revision `running`) to the code on disk.

    Called from the replica's `reconfigure`; `args` are its constructor's. Never raises: a failure
    is logged and reported by `status()`, and the replica keeps its old code and state."""
    wanted = (config or {}).get(REVISION_KEY)
    _status[CONFIG_KEY] = (config or {}).get(CONFIG_KEY)
    if not wanted or wanted == running or code_revision() == running:
        _status.update(wanted=wanted, error=None)
        return
    started = time.perf_counter()
    _status.update(wanted=wanted, error=None, seconds=None)
    old_class, old_state = type(replica), dict(replica.__dict__)
    try:
        if _kept_digest() != _KEPT_AT_START:
            raise Refused(f"the model's code ({', '.join(sorted(KEPT))}) changed since this replica started")
        new_class = _import_fresh().Imagine.func_or_class
        # Same layout (plain classes with a __dict__), so the instance can change class in place: Serve's
        # proxy keeps calling this object, whose ASGI app and routes are now the new module's.
        replica.__class__ = new_class
        await new_class.__init__(replica, args)
        await replica._run_asgi_lifespan_startup()
    except Exception as e:
        replica.__class__ = old_class
        replica.__dict__.clear()
        replica.__dict__.update(old_state)
        _status["error"] = f"{type(e).__name__}: {e}"
        log.error("hot reload to %s failed; the previous code keeps serving:\n%s", wanted, traceback.format_exc())
        return
    _status["seconds"] = round(time.perf_counter() - started, 3)
    log.info("hot reload: now serving %s, the model kept (%.2fs)", wanted, _status["seconds"])
