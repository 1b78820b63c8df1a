"""Driving the real Codex CLI (npm `@openai/codex`) against a loopwire server, for the client tests.

Owns finding the binary `make test` installed (the version the Makefile pins, or LOOPWIRE_CODEX_VERSION), the
throwaway CODEX_HOME whose config.toml points Codex at loopwire as a custom WebSocket-mode provider with every
outbound feature off, and running it (`codex exec`, and `codex app-server` over stdio for multi-turn
threads). It must not start loopwire (the tests do) nor judge what it sees. Codex reaches only loopback: its
config turns off update checks, analytics, feedback, OTEL export, plugins and apps, and any other request it
would make goes to a dead proxy on 127.0.0.1 (HTTPS_PROXY), with NO_PROXY for loopback only.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, ROOT

KEY_VARIABLE = "LOOPWIRE_CODEX_TEST_KEY"
MODEL = "loopwire-sim"
# Features that would reach the network beyond loopback (plugin and app sync, update prompts, suggestions).
OFFLINE_FEATURES_OFF = ("plugins", "remote_plugin", "apps", "in_app_updates", "tool_suggest")
DEAD_PROXY = "http://127.0.0.1:9"
RUN_TIMEOUT_S = 90.0


def pinned_version() -> str:
    """The Codex version under test: LOOPWIRE_CODEX_VERSION (set by make), else the Makefile's pin."""
    version = os.environ.get("LOOPWIRE_CODEX_VERSION")
    if version:
        return version
    found = re.search(r"^CODEX_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile pins no CODEX_VERSION"
    return found.group(1)


def codex_binary() -> Path:
    """The installed Codex binary, or a pytest skip that says why it is not there."""
    version = pinned_version()
    binary = ROOT / ".tools" / "node" / f"codex-{version}" / "node_modules" / ".bin" / "codex"
    if version != "none" and binary.exists():
        return binary
    if shutil.which("npm") is None:
        pytest.skip(
            f"Codex CLI tests skipped: npm is not on this machine (make test installs @openai/codex@"
            f"{version} into .tools/node with npm when it is)"
        )
    pytest.skip(f"Codex CLI {version} is not installed in .tools/node: run `make test` or `make codex`")


def write_codex_home(home: Path, base_url: str) -> Path:
    """A CODEX_HOME whose config.toml makes loopwire (at `base_url`, ".../v1") the WebSocket-mode provider."""
    home.mkdir(parents=True, exist_ok=True)
    features = "\n".join(f"{name} = false" for name in OFFLINE_FEATURES_OFF)
    (home / "config.toml").write_text(
        f"""model = "{MODEL}"
model_provider = "loopwire"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"

[features]
{features}

[model_providers.loopwire]
name = "loopwire"
base_url = "{base_url}"
env_key = "{KEY_VARIABLE}"
wire_api = "responses"
supports_websockets = true
request_max_retries = 0
stream_max_retries = 0
"""
    )
    return home


def codex_environment(home: Path) -> dict[str, str]:
    """Only what Codex needs: no inherited keys or proxies; anything not on loopback hits a dead proxy."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home.parent),
        "CODEX_HOME": str(home),
        KEY_VARIABLE: API_KEY,
        "HTTPS_PROXY": DEAD_PROXY,
        "HTTP_PROXY": DEAD_PROXY,
        "ALL_PROXY": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost",
        "RUST_LOG": "warn",
        "NO_COLOR": "1",
    }


_OUTBOUND = re.compile(
    r"error sending request for url \((\S+?)\)"
    r"|unable to access '(\S+?)'"
    r"|(\S*127\.0\.0\.1:9\b\S*|port 9 after)"
)


def outbound_urls(log: str) -> list[str]:
    """What Codex's log says it tried to reach off loopback (each attempt fails at the dead proxy): a
    feature the config does not turn off yet, as a new Codex release may add one."""
    return sorted({next(group for group in found if group) for found in _OUTBOUND.findall(log)})


@dataclass
class ExecRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def describe(self) -> str:
        return f"codex exec exited {self.returncode}\nevents: {self.events}\nstderr:\n{self.stderr[-4000:]}"

    def outbound(self) -> list[str]:
        return outbound_urls(self.stderr)

    def agent_messages(self) -> list[str]:
        return [
            event["item"]["text"]
            for event in self.events
            if event.get("type") == "item.completed" and event["item"].get("type") == "agent_message"
        ]


def run_exec(
    binary: Path, base_url: str, tmp: Path, prompt: str, *options: str, resume: bool = False
) -> ExecRun:
    """`codex exec --json` in a working directory under `tmp` (the same one each call, like its CODEX_HOME),
    read-only sandbox, never asking. `resume` continues the last session there (`codex exec resume --last`),
    which only a session that was not `--ephemeral` allows: sessions are kept when `options` or `resume` say
    so, and are ephemeral otherwise."""
    home = write_codex_home(tmp / "codex-home", base_url)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    keep = resume or "--keep-session" in options
    flags = [option for option in options if option != "--keep-session"]
    command = [str(binary), "exec"]
    if resume:
        command += ["resume", "--last"]
    else:
        command += ["--sandbox", "read-only", "-C", str(work)]
    command += ["--json", "--skip-git-repo-check", "--strict-config", *flags]
    if not keep:
        command.append("--ephemeral")
    done = subprocess.run(
        [*command, prompt],
        cwd=work,
        env=codex_environment(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return ExecRun(done.returncode, events, done.stderr)


class AppServer:
    """`codex app-server` on stdio (JSON-RPC, one object per line): the interface IDE clients drive, and the
    way to run several turns of one thread in one process (so on one WebSocket session)."""

    def __init__(self, binary: Path, base_url: str, tmp: Path) -> None:
        self.home = write_codex_home(tmp / "codex-home", base_url)
        self.work = tmp / "work"
        self.work.mkdir(exist_ok=True)
        self.stderr_path = tmp / "app-server.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), "app-server"],
            cwd=self.work,
            env=codex_environment(self.home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._next_id = 0
        self.notifications: list[dict[str, Any]] = []
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"codex app-server went quiet; stderr:\n{self.stderr_text()}") from None
        if not line:
            raise RuntimeError(f"codex app-server exited {self.proc.poll()}; stderr:\n{self.stderr_text()}")
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, method: str, params: dict[str, Any], timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self._observe(message)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def wait_for(self, method: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            self._observe(message)
            if message.get("method") == method:
                params: dict[str, Any] = message.get("params", {})
                return params

    def _observe(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:  # a server request (an approval): never expected here
            self._send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "no"}})
        if "method" in message:
            self.notifications.append(message)

    def start_thread(self) -> str:
        self.request("initialize", {"clientInfo": {"name": "loopwire-tests", "version": "0"}})
        self.notify("initialized")
        started = self.request(
            "thread/start",
            {"cwd": str(self.work), "approvalPolicy": "never", "sandbox": "read-only", "ephemeral": True},
        )
        thread_id: str = started["thread"]["id"]
        return thread_id

    def run_turn(self, thread_id: str, text: str) -> dict[str, Any]:
        """Start a turn and wait for its turn/completed; returns the completed Turn."""
        self.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]})
        completed = self.wait_for("turn/completed")
        turn: dict[str, Any] = completed["turn"]
        return turn

    def stderr_text(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()
