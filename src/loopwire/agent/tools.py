"""The agent's tools: list_files, grep, read_file, edit_file (search/replace) and run_tests on a repository.

Owns path confinement, output bounds, the test subprocess and simulated flakiness; must not decide anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..engines.sim.coding_policy import ERROR_PREFIX, PASSED_LINE

FAILED_LINE = "tests FAILED"
RAN_IN = re.compile(r"^(Ran \d+ tests?) in \d+(?:\.\d+)?s$", re.MULTILINE)
"""unittest's timing line: its seconds vary from run to run, and a real model's greedy answer depends on
every token it reads, so rollouts that must be comparable across transports would part there."""
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def _fn(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        },
        "strict": True,
    }


_PATH = {"type": "string", "description": "A path relative to the repository root ('.' is the root)."}
TOOL_SCHEMAS: list[dict[str, Any]] = [
    _fn("list_files", "List the files under a directory of the repository, recursively.", {"path": _PATH}),
    _fn(
        "grep",
        "Search files under a path for a regular expression; prints file:line: text for each match.",
        {"pattern": {"type": "string", "description": "A Python regular expression."}, "path": _PATH},
    ),
    _fn("read_file", "Read a text file of the repository.", {"path": _PATH}),
    _fn(
        "edit_file",
        "Replace the one occurrence of `old` in a file with `new` (a search/replace patch).",
        {
            "path": _PATH,
            "old": {"type": "string", "description": "Exact text to replace; must occur exactly once."},
            "new": {"type": "string", "description": "The replacement text."},
        },
    ),
    _fn(
        "run_tests",
        "Run the repository's tests (unittest). An empty selector runs all of them; else a test module "
        "such as 'tests.test_ranges' or a file such as 'tests/test_ranges.py'.",
        {"selector": {"type": "string", "description": "Which tests to run; '' for all."}},
    ),
]
"""The tools as Responses function tools (flat format)."""
TOOL_NAMES = tuple(str(schema["name"]) for schema in TOOL_SCHEMAS)


class ToolError(Exception):
    """A call that cannot be carried out; its message becomes the call's output after ERROR_PREFIX."""


@dataclass(frozen=True, slots=True)
class ToolSettings:
    """flaky: probability that a call fails (half of those as a simulated timeout); flaky_delay_s: how long
    a simulated timeout waits before it reports; test_timeout_s: the test subprocess's limit; max_output:
    characters of any output kept (head and tail); python: the interpreter that runs the tests."""

    flaky: float = 0.0
    seed: int = 0
    flaky_delay_s: float = 0.02
    test_timeout_s: float = 60.0
    max_output: int = 12_000
    max_matches: int = 200
    python: str = sys.executable

    def __post_init__(self) -> None:
        if not 0.0 <= self.flaky < 1.0:
            raise ValueError("flaky must be within [0, 1)")
        if self.flaky_delay_s < 0 or self.test_timeout_s <= 0 or self.max_output < 200:
            raise ValueError("flaky_delay_s >= 0, test_timeout_s > 0 and max_output >= 200 are required")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: str
    ok: bool
    seconds: float
    flaky: bool = False


def bound(text: str, limit: int) -> str:
    """`text` kept within `limit` characters: head and tail with a note of what was cut."""
    if len(text) <= limit:
        return text
    keep = (limit - 60) // 2
    return f"{text[:keep]}\n... [{len(text) - 2 * keep} characters cut] ...\n{text[-keep:]}"


class Toolbox:
    """The tools on one repository directory. Calls are synchronous (run_tests blocks on its subprocess);
    the flaky draws come from one seeded RNG, so the same sequence of calls fails the same way every run."""

    def __init__(self, root: Path, settings: ToolSettings | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ValueError(f"not a directory: {root}")
        self.settings = settings or ToolSettings()
        self._rng = random.Random(f"loopwire-tools:{self.settings.seed}")
        self._handlers: dict[str, Callable[[dict[str, Any]], str]] = {
            "list_files": lambda a: self.list_files(_text(a, "path", ".")),
            "grep": lambda a: self.grep(_text(a, "pattern"), _text(a, "path", ".")),
            "read_file": lambda a: self.read_file(_text(a, "path")),
            "edit_file": lambda a: self.edit_file(_text(a, "path"), _text(a, "old"), _text(a, "new")),
            "run_tests": lambda a: self.run_tests(_text(a, "selector", "")),
        }

    # -- dispatch ------------------------------------------------------------------------------------------

    def call(self, name: str, arguments: str) -> ToolOutcome:
        """Run one function call (arguments as the model sent them, JSON); never raises for a bad call."""
        started = time.perf_counter()
        fail, timeout = self._rng.random() < self.settings.flaky, self._rng.random() < 0.5
        if fail:
            if timeout:
                time.sleep(self.settings.flaky_delay_s)
                message = f"{name} timed out after {self.settings.flaky_delay_s:g}s (flaky tool, simulated)"
            else:
                message = f"{name} failed: resource temporarily unavailable (flaky tool, simulated)"
            return ToolOutcome(ERROR_PREFIX + message, False, time.perf_counter() - started, flaky=True)
        try:
            handler = self._handlers.get(name)
            if handler is None:
                raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(TOOL_NAMES)}")
            try:
                parsed = json.loads(arguments or "{}")
            except json.JSONDecodeError as error:
                raise ToolError(f"arguments are not valid JSON: {error}") from None
            if not isinstance(parsed, dict):
                raise ToolError("arguments must be a JSON object")
            output, ok = handler(parsed), True
        except ToolError as error:
            output, ok = ERROR_PREFIX + str(error), False
        return ToolOutcome(bound(output, self.settings.max_output), ok, time.perf_counter() - started)

    # -- the tools -----------------------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """`path` inside the repository, or ToolError: absolute paths, "..", escaping symlinks are refused."""
        if not path or "\x00" in path:
            raise ToolError("a path is required")
        pure = PurePosixPath(path.replace("\\", "/"))
        if pure.is_absolute() or re.match(r"^[A-Za-z]:", path):
            raise ToolError(f"path {path!r} is absolute; use a path relative to the repository root")
        if ".." in pure.parts:
            raise ToolError(f"path {path!r} leaves the repository ('..' is not allowed)")
        resolved = (self.root / pure).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolError(f"path {path!r} resolves outside the repository")
        return resolved

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _walk(self, base: Path) -> Iterator[Path]:
        if base.is_file():
            yield base
            return
        for directory, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and not name.endswith(".pyc"):
                    yield Path(directory) / name

    def list_files(self, path: str) -> str:
        base = self.resolve(path)
        if not base.exists():
            raise ToolError(f"no such directory: {path!r}")
        lines = [f"{self._relative(file)}  ({file.stat().st_size} bytes)" for file in self._walk(base)]
        return "\n".join(lines) if lines else "(no files)"

    def grep(self, pattern: str, path: str) -> str:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ToolError(f"invalid regular expression {pattern!r}: {error}") from None
        base = self.resolve(path)
        if not base.exists():
            raise ToolError(f"no such file or directory: {path!r}")
        matches: list[str] = []
        limit = self.settings.max_matches
        for file in self._walk(base):
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(text.splitlines(), start=1):
                if regex.search(line):
                    matches.append(f"{self._relative(file)}:{number}: {line.strip()}")
                    if len(matches) > limit:
                        return "\n".join(matches[:limit]) + f"\n... (more than {limit} matches)"
        return "\n".join(matches) if matches else "(no matches)"

    def read_file(self, path: str) -> str:
        file = self.resolve(path)
        if not file.is_file():
            raise ToolError(f"no such file: {path!r}")
        try:
            return file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{path!r} is not a UTF-8 text file") from None

    def edit_file(self, path: str, old: str, new: str) -> str:
        file = self.resolve(path)
        if not file.is_file():
            raise ToolError(f"no such file: {path!r}")
        if not old:
            raise ToolError("'old' must not be empty")
        text = file.read_text(encoding="utf-8")
        count = text.count(old)
        if count != 1:
            raise ToolError(f"'old' occurs {count} times in {path!r}; it must occur exactly once")
        file.write_text(text.replace(old, new), encoding="utf-8")
        return f"edited {path}: replaced 1 occurrence ({len(old)} -> {len(new)} characters)"

    def run_tests(self, selector: str) -> str:
        selector = selector.strip()
        command = [self.settings.python, "-m", "unittest"]
        if not selector:
            command += ["discover", "-s", "tests", "-t", "."]
        else:
            if selector.endswith(".py"):
                target = self.resolve(selector)
                if not target.is_file():
                    raise ToolError(f"no such test file: {selector!r}")
                selector = self._relative(target)[: -len(".py")].replace("/", ".")
            if not re.fullmatch(r"[A-Za-z_][\w.]*", selector):
                raise ToolError(f"not a test module or name: {selector!r}")
            command.append(selector)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        env.pop("PYTHONPATH", None)
        try:
            done = subprocess.run(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.settings.test_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ToolError(f"the tests did not finish within {self.settings.test_timeout_s:g}s") from None
        output = RAN_IN.sub(r"\1", done.stdout.decode("utf-8", "replace"))
        verdict = PASSED_LINE if done.returncode == 0 else FAILED_LINE
        return f"{verdict} (exit code {done.returncode})\n{output}"


def _text(arguments: dict[str, Any], key: str, default: str | None = None) -> str:
    value = arguments.get(key, default)
    if not isinstance(value, str):
        raise ToolError(f"argument {key!r} is required and must be a string")
    return value


def repo_digest(root: Path) -> tuple[str, dict[str, str]]:
    """The repository's state: sha256 of every file the tools can see (caches and dotfiles excluded), and
    one digest over them all (paths included)."""
    toolbox = Toolbox(root)
    files: dict[str, str] = {}
    for file in toolbox._walk(toolbox.root):
        files[toolbox._relative(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    total = hashlib.sha256()
    for relative in sorted(files):
        total.update(f"{relative}\0{files[relative]}\n".encode())
    return total.hexdigest(), files
