"""What the local stack exposes beyond loopback: every listening port, tried from a non-loopback address.

`local` promises loopback only. This phase lists every listening TCP socket of the stack's
processes (psutil: the Ray head's session, so GCS, raylet, workers, agents, dashboard, Serve's
proxy and replicas, and their metrics exporters), then connects to each port on each of the
machine's non-loopback addresses, without any token. A port is:
- *unreachable*: the connection is refused or times out (bound to loopback, as it should be);
- *authenticated*: reachable, and an HTTP GET / without the token gets 401 or 403, or (no HTTP
  answer) a gRPC call without the token to one of Ray's services (GRPC_METHODS) gets UNAUTHENTICATED;
- *exposed*: reachable, and anything else: another HTTP answer (a 200 from a metrics exporter, a
  404 from a web server), a gRPC call answered, or a connection accepted that neither HTTP nor
  those gRPC calls get a refusal from (whether it would refuse other calls is not established, so
  it counts). `exposed_unauthenticated_ports` is the number of exposed ports.
Also reported: `bound_beyond_loopback`, the sockets bound to a wildcard or external address, which
would be reachable from the network on a machine without a firewall even if this machine has no
other address to test from.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import psutil

from dogbooth.platforms import local
from dogbooth.platforms.local import LocalState

log = logging.getLogger("dogbooth.commands.reliability")

HTTP_PROBE = b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n"
AUTH_STATUSES = (401, 403)
# One real method of each kind of Ray gRPC server a local stack runs. Token auth is checked on a
# served method (an unknown one gets UNIMPLEMENTED first), so each port gets all of them.
GRPC_METHODS = (
    "/ray.serve.ASGIService/HandleRequest",  # a Serve replica's inter-deployment server
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",  # the GCS
    "/ray.rpc.NodeManagerService/GetNodeStats",  # the raylet
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # every worker
    "/ray.rpc.ReporterService/GetProfilingStats",  # the dashboard agent
)
GRPC_REFUSED = "grpc UNAUTHENTICATED"


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int
    process: str


@dataclass
class ExposureResult:
    addresses: list[str] = field(default_factory=list)  # the non-loopback addresses tried from
    listeners: int = 0
    bound_beyond_loopback: list[dict[str, Any]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)  # every reachable (port, address): verdict
    exposed: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def exposed_count(self) -> int | None:
        return len({p["port"] for p in self.exposed}) if self.addresses else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exposed_unauthenticated_ports": self.exposed_count}


def non_loopback_addresses() -> list[str]:
    """This machine's addresses that are not loopback or link-local (those need a scope to reach)."""
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(addr.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                found.append(str(ip))
    return sorted(set(found))


def listeners(state: LocalState) -> list[Listener]:
    """Every listening TCP socket of the stack's processes."""
    procs = {p.pid: p for p in local.session_processes(state)}
    found = []
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs and conn.laddr:
            try:
                name = " ".join(procs[conn.pid].cmdline())[:60] or procs[conn.pid].name()
            except psutil.Error:
                name = "?"
            found.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, name.strip()))
    return sorted(set(found), key=lambda listener: (listener.port, listener.ip))


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def probe(address: str, port: int, timeout_s: float = 2.0) -> str:
    """'unreachable', 'http <status>', or 'accepts a connection, no HTTP answer'."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as s:
            s.sendall(HTTP_PROBE)
            try:
                head = s.recv(64)
            except OSError:
                head = b""
    except OSError:
        return "unreachable"
    parts = head.split(b" ", 2)
    if head.startswith(b"HTTP/") and len(parts) > 1 and parts[1].isdigit():
        return f"http {int(parts[1])}"
    return "accepts a connection, no HTTP answer"


def grpc_probe(address: str, port: int, timeout_s: float = 3.0) -> str:
    """GRPC_REFUSED when a Ray gRPC method called without the token is refused; else what it got."""
    host = f"[{address}]" if ":" in address else address
    codes = []
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in GRPC_METHODS:
            call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
            try:
                call(b"", timeout=timeout_s)
                return f"grpc {method} answered without the token"
            except grpc.RpcError as e:
                code = e.code()  # type: ignore[attr-defined]  # grpc's errors are also Calls
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    return GRPC_REFUSED
                codes.append(code.name)
    return f"accepts a connection; no HTTP answer; gRPC {sorted(set(codes))}"


def exposed(verdict: str) -> bool:
    if verdict in ("unreachable", GRPC_REFUSED):
        return False
    return not (verdict.startswith("http ") and int(verdict.split()[1]) in AUTH_STATUSES)


def run(state: LocalState) -> ExposureResult:
    """Probe every listening port of the stack from every non-loopback address of this machine."""
    result, found = ExposureResult(addresses=non_loopback_addresses()), listeners(state)
    result.listeners = len(found)
    result.bound_beyond_loopback = [asdict(x) for x in found if not _is_loopback(x.ip)]
    if not result.addresses:
        result.note = "this machine has no non-loopback address to probe from"
    for address in result.addresses:
        for port in sorted({x.port for x in found}):
            verdict = probe(address, port)
            if verdict == "unreachable":
                continue
            if not verdict.startswith("http "):
                verdict = grpc_probe(address, port)
            owners = sorted({x.process for x in found if x.port == port})
            entry = {"address": address, "port": port, "answer": verdict, "processes": owners}
            result.ports.append(entry)
            if exposed(verdict):
                result.exposed.append(entry)
    log.info("exposure: %d listening sockets, %d bound beyond loopback; from %s: %d port(s) exposed",
             result.listeners, len(result.bound_beyond_loopback), result.addresses or "no address",
             result.exposed_count or 0)  # fmt: skip
    return result
