"""Real `redis-server` processes on free loopback ports with throwaway data directories, stopped by PID: a
standalone server (which can be paused with SIGSTOP, stopped, killed and started again on the same port and
data), a Redis Cluster of masters, and a master behind a Sentinel. For tests and benchmarks.

Owns starting, readiness, signals and stopping of redis-server; must not talk to loopwire.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .processes import free_port

READY_TIMEOUT_S = 20.0
MISSING = (
    "redis-server is not installed: `make test` installs it (apt-get install -y redis-server); "
    "on a machine without apt-get, install it with your package manager"
)


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or shutil.which("valkey-server")


def redis_server_binary() -> str:
    found = find_redis_server()
    if found is None:
        raise FileNotFoundError(MISSING)
    return found


CLUSTER_BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus), so its port must stay below 55536."""


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(bus_offset: int = 0) -> int:
    """A free loopback port; with `bus_offset`, one whose port + offset is a free port too."""
    for _ in range(100):
        port = free_port()
        if not bus_offset or (port + bus_offset <= 65535 and _bindable(port + bus_offset)):
            return port
    raise RuntimeError(f"no free loopback port with a free port {bus_offset} above it")


class RedisServer:
    """One redis-server. `appendfsync` is "always" (a write is on disk before Redis answers), "everysec"
    or "no"; AOF is on and RDB snapshots are off, as docs/deployment.md recommends."""

    def __init__(
        self,
        data_dir: Path,
        *,
        appendfsync: str = "always",
        extra: tuple[str, ...] = (),
        config: str | None = None,
    ) -> None:
        self.binary = redis_server_binary()
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.extra = extra
        self.config = config  # a config file's text, written to the data directory and passed first
        self.bus_offset = CLUSTER_BUS_OFFSET if "--cluster-enabled" in extra else 0
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = self.port or _free_port(self.bus_offset)
            head = []
            if self.config is not None:
                config_path = self.data_dir / "redis.conf"
                config_path.write_text(self.config)
                head = [str(config_path)]
            args = [
                self.binary,
                *head,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "no",
                "--logfile", str(self.data_dir / "redis.log"),
                *self.extra,
            ]  # fmt: skip
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self.kill()
            self.port = 0
        raise RuntimeError(f"redis-server did not start; log:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return (self.data_dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return True
            except OSError:
                pass
            time.sleep(0.02)  # readiness polling only
        return False

    def command(self, *words: str, timeout: float = 2.0) -> bytes:
        """Send one inline command and return the raw first reply (enough for PING, INFO and the like)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            payload = b"*%d\r\n" % len(words) + b"".join(
                b"$%d\r\n%s\r\n" % (len(word.encode()), word.encode()) for word in words
            )
            sock.sendall(payload)
            reply = sock.recv(1 << 20)
            if reply.startswith(b"$"):  # a bulk string: read all of it
                size = int(reply[1 : reply.index(b"\r\n")])
                header = reply.index(b"\r\n") + 2
                while len(reply) < header + size + 2:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        break
                    reply += chunk
            return reply

    def info(self, section: str) -> dict[str, str]:
        reply = self.command("INFO", section).decode()
        lines = reply.split("\r\n")[1:]
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def calls(self, command: str) -> int:
        """How many times Redis ran `command` (INFO commandstats), e.g. "evalsha"."""
        stats = self.info("commandstats").get(f"cmdstat_{command}", "")
        fields = dict(pair.split("=", 1) for pair in stats.split(",") if "=" in pair)
        return int(fields.get("calls", 0))

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (Redis flushes the AOF and exits); SIGKILL only if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisClusterProcesses:
    """A Redis Cluster of `count` masters (no replicas) on loopback, its 16384 slots split evenly."""

    def __init__(self, base_dir: Path, count: int = 3) -> None:
        cluster = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        self.nodes = [RedisServer(base_dir / f"node-{index}", extra=cluster) for index in range(count)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        share = 16384 // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = 16383 if index == len(self.nodes) - 1 else (index + 1) * share - 1
            assert node.command("CLUSTER", "ADDSLOTSRANGE", str(index * share), str(last)) == b"+OK\r\n"
        for node in self.nodes[1:]:
            assert self.nodes[0].command("CLUSTER", "MEET", "127.0.0.1", str(node.port)) == b"+OK\r\n"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(b"cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                states = [node.command("CLUSTER", "INFO").split(b"\r\n")[1:2] for node in self.nodes]
                raise RuntimeError(f"the Redis Cluster did not reach cluster_state:ok: {states}")
            time.sleep(0.05)  # readiness polling only
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelProcesses:
    """One Redis master watched by one Sentinel (`redis-server --sentinel`), service name "loopwire"."""

    def __init__(self, base_dir: Path) -> None:
        self.master = RedisServer(base_dir / "master")
        self.base_dir = base_dir
        self.sentinel: RedisServer | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/loopwire/0"

    def start(self) -> RedisSentinelProcesses:
        self.master.start()
        config = (
            f"sentinel monitor loopwire 127.0.0.1 {self.master.port} 1\n"
            "sentinel down-after-milliseconds loopwire 5000\n"
        )
        self.sentinel = RedisServer(self.base_dir / "sentinel", config=config, extra=("--sentinel",))
        self.sentinel.start()
        return self

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
        self.master.stop()
