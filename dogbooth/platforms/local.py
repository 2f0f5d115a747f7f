"""The `local` platform: a private Ray head on this machine, the Serve app deployed over REST.

What `up` starts is recorded in a state file, so `down` stops exactly that (and nothing of a Ray
you run yourself). The head runs with token authentication and a token of its own, which also
makes a stale `~/.ray/auth_token` irrelevant: the dashboard can run code, so it is never open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from dogbooth.core.errors import BringUpError
from dogbooth.core.names import METRICS_PATH
from dogbooth.core.paths import REPO_ROOT, state_dir
from dogbooth.core.polling import poll
from dogbooth.core.tools import env_executable
from dogbooth.platforms import localserve, reload
from dogbooth.platforms.serveclient import ServeClient
from dogbooth.render.serveconfig import APP_NAME
from dogbooth.settings.profiles import Profile
from services import hotswap
from services.revision import code_revision

log = logging.getLogger("dogbooth.platforms.local")


@dataclass
class LocalState:
    """What `up` started; enough for `down` to stop it and for clients to reach it."""

    profile: str
    pid: int
    sid: int
    temp_dir: str
    dashboard_url: str
    token: str
    endpoint_base: str
    source_root: str
    log_path: str
    metrics_url: str = ""  # Ray's Prometheus endpoint; "" in a state file written before it existed

    @classmethod
    def path_for(cls, profile: str) -> Path:
        return state_dir() / f"{profile}.json"

    def save(self) -> None:
        path = self.path_for(self.profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)  # holds the dashboard token
        tmp.replace(path)

    @classmethod
    def read(cls, profile: str) -> LocalState | None:
        path = cls.path_for(profile)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise BringUpError(f"{path}: unreadable state ({e}); delete it after stopping Ray by hand") from e

    def client(self) -> ServeClient:
        return ServeClient(self.dashboard_url, self.token)


def _session_processes(sid: int, temp_dir: str) -> list[psutil.Process]:
    """Live processes of our head: same session id, or naming our private temp dir."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            same_session = os.getsid(proc.pid) == sid
        except OSError:
            continue
        if same_session or temp_dir in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def is_alive(state: LocalState) -> bool:
    return bool(_session_processes(state.sid, state.temp_dir))


def session_processes(state: LocalState) -> list[psutil.Process]:
    """Every live process of this head (the reliability session probes their listening ports)."""
    return _session_processes(state.sid, state.temp_dir)


def port_owner(port: int, host: str = "127.0.0.1") -> str | None:
    """None when `port` can be bound; else who holds it, as far as we can tell."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return None
        except OSError:
            pass
    for conn in psutil.net_connections("inet"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline())[:80]})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return "another process"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile_ports(profile: Profile) -> dict[str, int]:
    """The host ports a local stack binds, by the profile key that sets each."""
    return {
        "serve.http_port": profile.serve.http_port,
        "ray.gcs_port": profile.ray.gcs_port,
        "ray.dashboard_port": profile.ray.dashboard_port,
        "ray.metrics_port": profile.ray.metrics_port,
    }


def on_free_ports(profile: Profile, name: str) -> Profile:
    """`profile` renamed, with every host port a local stack binds (`profile_ports`) moved to a free one:
    a stack that collides with nothing, such as a developer's own `up`."""
    data = profile.model_dump()
    data["name"] = name
    for key in profile_ports(profile):
        section, field = key.split(".")
        data[section][field] = free_port()
    return Profile.model_validate(data)


def busy_ports(profile: Profile) -> list[str]:
    """One line per port of the profile that another process holds; [] when all are free."""
    return [
        f"{key} {port} is in use by {owner}"
        for key, port in profile_ports(profile).items()
        if (owner := port_owner(port))
    ]


def _check_ports(profile: Profile) -> None:
    if busy := busy_ports(profile):
        raise BringUpError(
            "cannot start: " + "; ".join(busy) + f". Free the port(s) or change them in {profile.source} "
            "(or pass --port for the HTTP port)."
        )


def _ray_executable() -> str:
    found = env_executable("ray")
    if not found:
        raise BringUpError("the `ray` command is missing; install the project (`pip install -e .`)")
    return found


def _ray_start(profile: Profile, source_root: Path, temp_dir: str, token: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Run `ray start --head` for the profile in a session of its own; its output goes to the returned log."""
    argv = [
        _ray_executable(), "start", "--head", "--disable-usage-stats",
        f"--port={profile.ray.gcs_port}", "--node-ip-address=127.0.0.1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={profile.ray.dashboard_port}", f"--temp-dir={temp_dir}",
        # Fixed defaults (10001, 52365) would collide with a second Ray on this machine.
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        # What local never uses, each a process that competes for the cores while the head starts: the
        # autoscaler's monitor, and the log monitor (it streams worker logs to drivers; Serve's stay in files).
        "--no-monitor", "--include-log-monitor=false",
        f"--metrics-export-port={profile.ray.metrics_port}",  # a known port: `nox -s metrics` and Prometheus read it
    ]  # fmt: skip
    if profile.ray.num_cpus:
        argv.append(f"--num-cpus={profile.ray.num_cpus}")
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # Loopback only. `ray start` turns --node-ip-address=127.0.0.1 into the machine's external
        # address (services.resolve_ip_for_localhost) unless multi-node is off, as it is on macOS.
        # With the node IP 127.0.0.1 the GCS, raylet, worker, agent and metrics servers all bind
        # to 127.0.0.1 (docs/reliability.md, "What local exposes"). A single-node head loses nothing.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(source_root), env.get("PYTHONPATH")])),
    )
    log_path = state_dir() / f"{profile.name}.ray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("$ %s", " ".join(argv))
    with open(log_path, "w") as out:
        # Ray workers put their cwd first on sys.path, ahead of PYTHONPATH: it must be the source root.
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=source_root, start_new_session=True
        )
    return proc, log_path


def start_head(profile: Profile, source_root: Path) -> LocalState:
    """Start a Ray head in its own session; return once the dashboard answers.

    Not `--block`: that mode tears the whole head down when any helper process exits, and Ray's
    client server does exit when node registration is slow on a loaded machine. Without it the
    head's processes outlive `ray start` in our session, which is how `stop` finds them.
    """
    _check_ports(profile)
    temp_dir = f"/tmp/dogbooth-ray-{os.getuid()}-{profile.ray.gcs_port}"  # short: socket paths are capped
    token = secrets.token_hex(16)
    proc, log_path = _ray_start(profile, source_root, temp_dir, token)
    state = LocalState(
        profile=profile.name, pid=proc.pid, sid=proc.pid, temp_dir=temp_dir,
        dashboard_url=f"http://127.0.0.1:{profile.ray.dashboard_port}", token=token,
        endpoint_base=f"http://127.0.0.1:{profile.serve.http_port}", source_root=str(source_root),
        log_path=str(log_path), metrics_url=f"http://127.0.0.1:{profile.ray.metrics_port}{METRICS_PATH}",
    )  # fmt: skip
    state.save()
    client = state.client()

    def dashboard_up() -> bool | None:
        if client.dashboard_up():
            return True
        if proc.poll() not in (None, 0):  # `ray start` exits 0 once the head runs detached; else it failed
            raise BringUpError(f"`ray start` exited {proc.returncode}")
        return None

    try:
        poll(f"the Ray dashboard at {state.dashboard_url}", dashboard_up, timeout_s=180, interval_s=0.5)
    except BringUpError as e:
        stop(state)
        tail = "\n".join(log_path.read_text().splitlines()[-25:])
        raise BringUpError(f"the Ray head did not start ({e}; log {log_path}):\n{tail}") from e
    log.info("Ray head up: dashboard %s (token in %s)", state.dashboard_url, LocalState.path_for(profile.name))
    return state


def stop(state: LocalState, grace_s: float = 15, *, keep_logs: bool = False) -> int:
    """Stop every process of this head: SIGTERM, then SIGKILL after `grace_s`. Returns how many."""
    procs = _session_processes(state.sid, state.temp_dir)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    leftover = _session_processes(state.sid, state.temp_dir)
    if leftover:
        raise BringUpError(f"processes survived SIGKILL: {[p.pid for p in leftover]}")
    if not keep_logs:
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    LocalState.path_for(state.profile).unlink(missing_ok=True)
    return len(procs)


def deploy(
    state: LocalState, profile: Profile, *, timeout_s: float = 300, hot: bool = False,
    timings: dict[str, float] | None = None, settle: bool = True,
) -> str:  # fmt: skip
    """Deploy the source tree's serve code with the profile's config; return its revision once /readyz
    answers from both, and (`settle`) Serve runs no replica of an earlier deploy any more.

    `hot`: only handler code changed (services/hotswap.py `needs_restart`), so the runtime_env keeps
    its value and the replicas reload in-process, keeping the model. A replica that finds the model's
    code changed after all refuses, and gets a restart instead. `timings` gets `up --timings`'s phases.
    `settle` False: return as soon as one replica serves it (`up`'s surge, which a deploy that settles follows)."""
    revision = code_revision(Path(state.source_root) / "services")
    client = state.client()
    app = client.applications().get(APP_NAME) if hot else None
    restart = (reload.deployed_value(app) if app else None) or revision
    put_at = time.time()
    config = localserve.config_for(profile, restart, revision)
    fingerprint = str(localserve.fingerprint(config))
    client.deploy(config)
    in_process = restart != revision
    failed = (lambda: None) if in_process else localserve.failed_deploy(client, fingerprint)
    try:
        body = localserve.wait_serving(
            state.endpoint_base, Path(state.source_root), revision, timeout_s=timeout_s, config=fingerprint,
            done=localserve.settled(client, config) if settle else lambda: True, in_process=in_process, failed=failed,
        )  # fmt: skip
    except localserve.ReloadFailed as e:
        if not in_process or hotswap.Refused.__name__ not in str(e):
            raise
        log.info("%s; restarting the replicas instead", e)
        return deploy(state, profile, timeout_s=timeout_s, timings=timings, settle=settle)
    if timings is not None:
        timings.update(localserve.replica_phases(body, put_at))
    return str(body["revision"])


def surge_profile(profile: Profile) -> Profile | None:
    """`profile` with one replica more, for an update without a gap; None when the head has no room.

    With the count unchanged, Serve's rolling update stops an old replica before its successor runs
    (ray/serve/_private/deployment_state.py: it stops `rollout_size - pending` old replicas, and with
    one replica that is the only one): requests got 503s and 408s for a replica's start (measured by
    `nox -s reliability`, phase updates). With one more replica asked for, no old replica stops until
    a new one runs; deploying the profile as it is then scales back down, draining the surplus one."""
    dep = profile.serve.deployment
    cpus = profile.ray.num_cpus or os.cpu_count() or 1
    if dep.num_replicas is None or dep.num_gpus or (dep.num_replicas + 1) * dep.num_cpus > cpus:
        return None  # autoscaled, or a surge replica could never be placed and Serve would wait forever
    data = profile.model_dump()
    data["serve"]["deployment"]["num_replicas"] = dep.num_replicas + 1
    return Profile.model_validate(data)


def up(
    profile: Profile, *, source_root: Path = REPO_ROOT, timeout_s: float = 300, timings: dict[str, float] | None = None
) -> str:
    """Bring the profile up (or update it in place) and return the /imagine URL once /readyz is 200.

    `timings`, when given, gets where the time went, phase by phase (`up --timings`)."""
    timings = {} if timings is None else timings
    started = time.time()
    state = LocalState.read(profile.name)
    if state is not None and not is_alive(state):
        log.info("clearing state of a head that is no longer running")
        stop(state)
        state = None
    if state is not None and Path(state.source_root) != source_root:
        raise BringUpError(f"profile {profile.name} is already up from {state.source_root}; run `nox -s down` first")
    fresh = state is None
    if state is None:
        state = start_head(profile, source_root)
    timings["ray start" if fresh else "ray start (already running)"] = time.time() - started
    try:
        if not fresh and (surge := surge_profile(profile)) is not None:
            # One replica of the new config serving is enough: the profile's deploy, a pure scale down
            # (localserve.config_for), then waits until every replica serves it.
            deploy(state, surge, timeout_s=timeout_s, timings=timings, settle=False)
        revision = deploy(state, profile, timeout_s=timeout_s, timings=timings)
    except BaseException:
        log.error("bring-up failed; Ray logs are under %s/session_latest/logs", state.temp_dir)
        if fresh:  # leave nothing behind that this call started; an existing stack stays as it was
            with contextlib.suppress(BringUpError):
                stop(state, keep_logs=True)
        raise
    log.info("serving code revision %s", revision)
    _say_where_metrics_are(state)
    return f"{state.endpoint_base}/imagine"


def _say_where_metrics_are(state: LocalState) -> None:
    if not state.metrics_url:
        return
    target = state.metrics_url.removeprefix("http://").removesuffix(METRICS_PATH)
    log.info("metrics (Prometheus text; Ray's, Serve's and dogbooth_*): %s", state.metrics_url)
    log.info("  a summary: nox -s metrics -- --profile %s", state.profile)
    log.info(
        "  a Prometheus of your own scrapes it with: scrape_configs: [{job_name: dogbooth, static_configs: "
        "[{targets: ['%s']}]}] (docs/observability.md)", target,
    )  # fmt: skip


def down(profile_name: str) -> bool:
    """Stop what `up` or `dev` started for this profile. Idempotent: False when nothing was running."""
    state = LocalState.read(profile_name)
    if state is None:
        log.info("nothing of ours is running for profile %s", profile_name)
        return False
    count = stop(state)
    log.info("stopped %d process(es) of profile %s", count, profile_name)
    return True
