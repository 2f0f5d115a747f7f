"""The one entry point for cluster profiles: build the plan of a command for kind or eks, then print
it (dry run) or execute it. The caller never branches on the platform. `up` and `dev` run the
doctor's preflight checks first (dogbooth/platforms/doctor.py); a dry run prints them before the plan.
"""

from __future__ import annotations

from dogbooth.core import tools
from dogbooth.core.errors import BringUpError, CommandFailed
from dogbooth.core.paths import REPO_ROOT
from dogbooth.core.tools import Runner
from dogbooth.platforms import doctor, eks, kind
from dogbooth.platforms import plan as p
from dogbooth.platforms.kubesteps import kube_target, required_tools
from dogbooth.settings.profiles import Profile


def build_plan(command: str, profile: Profile) -> p.Plan:
    """The ordered plan of `command` (up, down, dev) for a kind or eks profile; builds touch nothing."""
    if profile.platform == "kind":
        return {"up": kind.up, "dev": kind.dev, "down": kind.down}[command](profile)
    if profile.platform == "eks":
        if command == "dev":
            raise BringUpError(
                "no dev loop on eks: use --profile kind-cpu or kind-gpu for live reload, "
                "`nox -s cloud` to deploy to EKS"
            )
        return {"up": eks.up, "down": eks.down}[command](profile)
    raise BringUpError(f"profile {profile.name} is platform {profile.platform}, not a cluster")


def run(command: str, profile: Profile, *, dry_run: bool = False) -> str | None:
    """Print (dry run) or execute the plan; returns the /imagine URL after a successful up."""
    plan = build_plan(command, profile)
    checked = command in doctor.PREFLIGHT_COMMANDS
    if checked:  # the tools, Docker, GPU driver, AWS quotas... in seconds, before anything is created
        doctor.preflight(profile, command, dry_run=dry_run)
    if dry_run:
        print(plan.describe(), flush=True)
        print("(dry run: nothing was changed)", flush=True)
        return None
    if not checked:
        tools.require(required_tools(profile.platform, command), purpose=f"`{command}` on profile {profile.name}")
    ctx = p.Context(profile, kube_target(profile), runner=Runner(cwd=REPO_ROOT))  # paths in plans are repo-relative
    try:
        plan.execute(ctx)
    except CommandFailed as e:
        raise BringUpError(f"{plan.name} for profile {profile.name} failed; re-running is safe.\n{e}") from e
    return ctx.values.get("endpoint")
