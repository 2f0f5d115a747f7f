"""Updates under load: the code revision changes twice and the model once while traffic flows.

Each update is what a user does: edit the serve code (here: a new module in the stack's copy of
`services/`, which changes the content hash the replica reports) or pick another model export,
then `up` again (dogbooth/platforms/local.py), which redeploys the running head and waits until
the new revision answers. Meanwhile an open loop sends requests at about half of the measured
capacity. Every answer is tagged with the `X-Dogbooth-Revision` and `X-Model` headers it carried:
each must be a 200 from one of the revisions and models deployed, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dogbooth.commands.loadgen import GRACE_S, percentile, session
from dogbooth.commands.reliability import ReliabilityError
from dogbooth.platforms import local
from dogbooth.settings import profiles
from dogbooth.settings.profiles import Profile
from services import generated
from services.models import default_cache_dir
from services.revision import code_revision

log = logging.getLogger("dogbooth.commands.reliability")

MARKER_MODULE = "_reliability_update.py"  # a module of its own: the edit changes the revision, nothing else


@dataclass(frozen=True)
class Answer:
    sent_s: float
    latency_s: float
    status: int | None  # None: no HTTP answer (error says why)
    revision: str = ""
    model: str = ""
    error: str = ""
    body: str = ""  # the start of a non-200 answer: says who refused (admission's JSON, Serve's text)


@dataclass
class UpdateResult:
    rate_rps: float
    sent: int = 0
    failed: int = 0  # anything but a 200 from a deployed revision and model
    hung: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    answered_by: dict[str, int] = field(default_factory=dict)  # "revision model": 200s
    unexpected: int = 0  # 200s from a revision or model that was never deployed
    refusals: dict[str, int] = field(default_factory=dict)  # the non-200 answers' bodies (start), counted
    updates: list[dict[str, Any]] = field(default_factory=list)  # what, revision, model, seconds
    p99_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _send(client: Any, url: str, origin: float) -> Answer:
    import aiohttp

    started = time.monotonic()
    try:
        async with client.get(url) as r:
            content = await r.read()
            return Answer(started - origin, time.monotonic() - started, r.status,
                          r.headers.get("x-dogbooth-revision", ""), r.headers.get("x-model", ""),
                          body="" if r.status == 200 else content[:100].decode(errors="replace"))  # fmt: skip
    except TimeoutError:
        return Answer(started - origin, time.monotonic() - started, None, error="timeout")
    except aiohttp.ClientError as e:
        return Answer(started - origin, time.monotonic() - started, None, error=type(e).__name__)


async def _load(client: Any, url: str, rate: float, stop: asyncio.Event, origin: float) -> list[Answer]:
    """Arrivals at `rate` per second until `stop` is set (open loop); then every answer."""
    tasks: list[asyncio.Task[Answer]] = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(_send(client, url, origin)))
        delay = origin + len(tasks) / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return list(await asyncio.gather(*tasks))


def second_export(workdir: Path) -> Path:
    """Another model export to update to: a copy of the generated tiny pipeline in its own directory."""
    source = generated.materialize(generated.SPECS["tiny"], default_cache_dir() / "generated")
    target = workdir / "model-b"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def edit_code(source_root: Path, n: int) -> str:
    """Change the served code (a new comment in a module of its own); returns the new revision."""
    (source_root / "services" / MARKER_MODULE).write_text(f"# reliability update {n}: a code change, nothing else\n")
    return code_revision(source_root / "services")


def steps(profile: Profile, source_root: Path, workdir: Path) -> list[tuple[str, Callable[[], Profile]]]:
    """The three updates, in order: each changes what is served and returns the profile to `up`."""
    model_b = second_export(workdir)
    with_model = profiles.with_overrides(profile, model=str(model_b))

    def code(n: int, target: Profile) -> Callable[[], Profile]:
        return lambda: (edit_code(source_root, n), target)[1]

    return [
        ("code revision 1", code(1, profile)),
        ("model: another export", lambda: with_model),
        ("code revision 2", code(2, with_model)),
    ]


async def _drive(
    url: str, headers: dict[str, str], source_root: Path, plan: list[tuple[str, Callable[[], Profile]]], *,
    rate: float, timeout_s: float, settle_s: float,
) -> tuple[UpdateResult, list[Answer]]:  # fmt: skip
    result, stop, origin = UpdateResult(rate_rps=rate), asyncio.Event(), time.monotonic()
    async with session(timeout_s + GRACE_S, headers) as client:
        load = asyncio.create_task(_load(client, url, rate, stop, origin))
        await asyncio.sleep(settle_s)
        for what, change in plan:
            started = time.monotonic()
            target = change()
            log.info("update under load: %s", what)
            await asyncio.to_thread(local.up, target, source_root=source_root)
            result.updates.append({"what": what, "revision": code_revision(source_root / "services"),
                                   "model": target.serve.app.model, "at_s": round(started - origin, 1),
                                   "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
            await asyncio.sleep(settle_s)
        stop.set()
        answers = await load
    return result, answers


def summarize(result: UpdateResult, answers: list[Answer], revisions: set[str], models: set[str]) -> UpdateResult:
    """Fill in the counts: a request counts as failed unless a deployed revision and model answered 200."""
    ok = [a for a in answers if a.status == 200]
    good = [a for a in ok if a.revision in revisions and a.model in models]
    result.sent, result.unexpected, result.failed = len(answers), len(ok) - len(good), len(answers) - len(good)
    result.hung = sum(a.error == "timeout" for a in answers)
    result.statuses = dict(sorted(Counter(str(a.status) if a.status else a.error for a in answers).items()))
    result.answered_by = dict(sorted(Counter(f"{a.revision} {a.model}" for a in ok).items()))
    refused = Counter(f"{a.status} {a.body[:60]}" for a in answers if a.status not in (200, None))
    result.refusals = dict(refused.most_common(10))
    result.p99_ms = round(percentile((a.latency_s for a in ok), 99) * 1000, 1)
    return result


def run(
    profile: Profile, source_root: Path, url: str, headers: dict[str, str], workdir: Path, *, rate: float,
    request_timeout_s: float, settle_s: float = 10.0,
) -> UpdateResult:  # fmt: skip
    """Two code revisions and one model change under `rate` req/s on the running stack of `profile`."""
    if local.LocalState.read(profile.name) is None:
        raise ReliabilityError(f"no running stack for {profile.name}")
    revisions, models = {code_revision(source_root / "services")}, {profile.serve.app.model}
    plan = steps(profile, source_root, workdir)
    result, answers = asyncio.run(_drive(url, headers, source_root, plan, rate=rate, timeout_s=request_timeout_s,
                                         settle_s=settle_s))  # fmt: skip
    revisions |= {u["revision"] for u in result.updates}
    models |= {u["model"] for u in result.updates}
    return summarize(result, answers, revisions, models)
