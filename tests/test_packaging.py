"""The base install (`pip install loopwire`, no extras) runs every command the README shows: what those
commands import beyond the standard library is declared in pyproject's base dependencies, and what needs an
extra (the local engine's torch, the benchmark's plots) is imported only when used, with a message."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from conftest import ROOT

COMMAND_MODULES = [
    "loopwire.cli",  # loopwire serve, --version
    "loopwire.server.app",
    "loopwire.server.coalesce",
    "loopwire.server.logs",
    "loopwire.agent.cli",  # loopwire agent
    "loopwire.bench.cli",  # loopwire bench ...
    "loopwire.bench.agent_cli",
    "loopwire.bench.turns",
    "loopwire.bench.stages",
    "loopwire.bench.gateway",
    "loopwire.bench.soak",
    "loopwire.bench.store_put",
    "loopwire.netem.command",
    "loopwire.engines.openai_chat",
    "loopwire.engines.responses_upstream",
]
VENV_OWN = {"pip", "setuptools"}
"""What every virtual environment has (setuptools' `_distutils_hack` loads at startup through a .pth)."""
EXTRAS_ONLY = {"torch", "transformers", "tokenizers", "safetensors", "matplotlib", "openai"}


def _requirement_name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def base_closure(names: set[str]) -> set[str]:
    """The base dependencies and everything they require in turn (their own extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue  # a platform-conditional one (uvloop on Windows)
        todo += [_requirement_name(need) for need in needs if "extra ==" not in need]
    return seen


def imported_distributions() -> set[str]:
    """The distributions whose modules importing the commands' modules loads, in a fresh interpreter."""
    code = (
        "import json, sys\n"
        f"for name in {COMMAND_MODULES!r}: __import__(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    owners = packages_distributions()
    top_level = json.loads(result.stdout)
    names = {dist.lower().replace("_", "-") for module in top_level for dist in owners.get(module, [])}
    return names - {"loopwire"} - VENV_OWN


def test_the_commands_import_only_base_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_requirement_name(requirement) for requirement in project["dependencies"]}
    imported = imported_distributions()
    assert not imported & EXTRAS_ONLY, f"a command imports an extra at startup: {imported & EXTRAS_ONLY}"
    undeclared = imported - base_closure(base)
    assert not undeclared, f"the commands import {undeclared}, which the base install does not bring"
    assert {"picows", "aiohttp", "uvicorn", "msgspec"} <= imported  # the client, the gateways, the server


def test_bench_local_without_torch_says_which_extra(tmp_path: Path) -> None:
    """A stand-in `torch` that cannot be imported makes the local benchmark name the extra, not crash."""
    (tmp_path / "torch.py").write_text("raise ModuleNotFoundError('No module named torch', name='torch')\n")
    result = subprocess.run(
        [sys.executable, "-m", "loopwire", "bench", "local", "--turns", "1"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'loopwire[local]'" in result.stderr
