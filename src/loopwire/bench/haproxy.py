"""A real HAProxy in front of `loopwire serve` nodes, for tests and benchmarks: writes its haproxy.cfg
(WebSocket upgrades with `timeout tunnel`, health checks on GET /readyz, connection failures redispatched to
another node, a resume token routed to the node it names), starts `haproxy -f cfg` in the foreground on a free
loopback port, reads server states over its stats socket, and stops it by PID.

Owns the balancer's configuration and process; must not talk to loopwire beyond what HAProxy itself does.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .processes import LoopbackHttp

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
RESUME_HEADER = "x-loopwire-resume"
"""The header a client puts on a WebSocket upgrade to resume a connection's lanes; its token starts with the
id of the node that issued it and a dot, which is what the balancer routes on."""
MISSING = (
    "haproxy is not installed: `make test` installs it (apt-get install -y haproxy); "
    "on a machine without apt-get, install it with your package manager"
)


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(path).is_file()), None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Backend:
    """One node: the name HAProxy knows it by (also its `--node-id`) and its loopback port."""

    name: str
    port: int


@dataclass(frozen=True, slots=True)
class Timing:
    """Health-check pace and the timeouts that matter for long-lived WebSockets."""

    check_inter_ms: int = 200
    """Health-check interval: a node that stops answering /readyz with 200 is out after `fall` of them."""
    fall: int = 1
    rise: int = 2
    connect_ms: int = 2000
    client_ms: int = 120_000
    server_ms: int = 120_000
    tunnel_ms: int = 3_600_000
    """Idle limit of an upgraded WebSocket (replaces client/server timeouts once the 101 is through): at
    least the server's connection age limit, so the balancer never cuts a socket loopwire would keep."""


def render_config(port: int, backends: Sequence[Backend], stats_socket: Path, timing: Timing) -> str:
    """haproxy.cfg for one frontend on 127.0.0.1:`port` and a `leastconn` backend of `backends`."""
    routes = "".join(
        f"    use-server {b.name} if {{ req.hdr({RESUME_HEADER}) -m beg {b.name}. }}\n" for b in backends
    )
    servers = "".join(f"    server {b.name} 127.0.0.1:{b.port} check\n" for b in backends)
    return f"""global
    maxconn 4096
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    option http-keep-alive
    timeout connect {timing.connect_ms}ms
    timeout client {timing.client_ms}ms
    timeout server {timing.server_ms}ms
    timeout tunnel {timing.tunnel_ms}ms
    timeout client-fin 5s
    timeout http-request 10s
    retries 3
    option redispatch 1

frontend loopwire
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {timing.check_inter_ms}ms fastinter {timing.check_inter_ms}ms \
downinter {timing.check_inter_ms}ms fall {timing.fall} rise {timing.rise}
{routes}{servers}"""


class HaproxyProcess(LoopbackHttp):
    """One `haproxy -db -f haproxy.cfg` process. `base_url` is "http://127.0.0.1:P/v1"."""

    def __init__(self, directory: Path, backends: Sequence[Backend], timing: Timing | None = None) -> None:
        binary = find_haproxy()
        if binary is None:
            raise FileNotFoundError(MISSING)
        self.binary = binary
        self.directory = directory
        self.backends = list(backends)
        self.timing = timing or Timing()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def stats_socket(self) -> Path:
        return self.directory / "haproxy.sock"

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def log_path(self) -> Path:
        return self.directory / "haproxy.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, *, wait_up: bool = True) -> HaproxyProcess:
        """Start HAProxy; with `wait_up`, return once every backend passed its health check."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = _free_port()
            self.config_path.write_text(
                render_config(self.port, self.backends, self.stats_socket, self.timing)
            )
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-db", "-f", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_listening():
                if wait_up:
                    self.wait_states({b.name: "UP" for b in self.backends})
                return self
            self.stop()
        raise RuntimeError(f"haproxy did not start; log:\n{self.log_text()}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                if self.stats_socket.exists():
                    return True
            except OSError:
                pass
            time.sleep(0.02)  # readiness polling only
        return False

    def command(self, line: str, timeout: float = 2.0) -> str:
        """One command on the stats socket (e.g. "show stat"); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """Each backend server's status as HAProxy sees it: "UP", "DOWN", "NOLB", "MAINT", or a transition
        such as "UP 1/2" / "DOWN 1/2"."""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        name_at, status_at, proxy_at = header.index("svname"), header.index("status"), header.index("pxname")
        states: dict[str, str] = {}
        for line in lines[1:]:
            fields = line.split(",")
            if len(fields) > status_at and fields[proxy_at] == "nodes" and fields[name_at] != "BACKEND":
                states[fields[name_at]] = fields[status_at]
        return states

    def wait_states(self, wanted: dict[str, str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every named server is in its wanted state (exactly: "UP" is not "UP 1/2"); TimeoutError
        naming the states seen otherwise."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.server_states()
            if all(states.get(name) == state for name, state in wanted.items()):
                return
            time.sleep(0.05)  # polling HAProxy's own view, bounded by the deadline
        raise TimeoutError(f"haproxy servers {states} did not reach {wanted} in {timeout_s:g} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (HAProxy's hard stop), SIGKILL if it hangs; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        return proc.returncode
