"""The scripted coding-agent policy the sim engine follows when a request's metadata asks for it.

Owns the decision of the next tool calls (or the final answer) from the conversation so far, and the few
strings by which it reads tool outputs (loopwire.agent's tools write them); must not do I/O. It is a
simulation: the repair itself comes from the fixture's fix description, passed in the metadata.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ...protocol.items import FunctionCall, FunctionCallOutput, InputItem

ERROR_PREFIX = "error: "
"""How a tool output that failed begins (the policy retries such a call)."""
PASSED_LINE = "tests passed"
"""How a green test run's output begins."""
_ERROR, _PASSED = ERROR_PREFIX, PASSED_LINE

POLICY_KEY = "loopwire_policy"
POLICY_NAME = "coding-agent"
MAX_RETRIES = 8
"""Consecutive error outputs of one call before the policy gives up on it."""
MAX_TEST_RUNS = 4
_METADATA_VALUE_LIMIT = 512


class Repair(Protocol):
    """What the policy needs of a fix: in `path`, the line `old` becomes `new`."""

    @property
    def path(self) -> str: ...

    @property
    def old(self) -> str: ...

    @property
    def new(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Repair:
    path: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call: its name and its arguments (canonical JSON, so equal calls compare equal)."""

    name: str
    arguments: str

    @classmethod
    def of(cls, name: str, **arguments: str) -> Call:
        return cls(name, json.dumps(arguments, sort_keys=True, ensure_ascii=False))


Decision = list[Call] | str
"""The next tool calls (several only while exploring with parallel tool calls), or the final answer."""


def policy_metadata(fix: Repair, *, seed: int, explore: int, batch: int = 1) -> dict[str, str]:
    """The request metadata that makes the sim engine follow this policy (each value within the API's
    512-character limit, which the fixture's one-line fixes respect)."""
    metadata = {
        POLICY_KEY: POLICY_NAME,
        "loopwire_seed": str(seed),
        "loopwire_explore": str(explore),
        "loopwire_batch": str(batch),
        "loopwire_fix_path": fix.path,
        "loopwire_fix_old": fix.old,
        "loopwire_fix_new": fix.new,
    }
    for key, value in metadata.items():
        if len(value) > _METADATA_VALUE_LIMIT:
            raise ValueError(f"{key} is longer than {_METADATA_VALUE_LIMIT} characters")
    return metadata


@dataclass(frozen=True, slots=True)
class CodingPolicy:
    """Explore (list_files, then `explore` seeded list_files/grep/read_file steps over what the listing
    showed), run the tests, read the buggy file, apply the fix with edit_file, run the tests again, repeat
    until green (at most MAX_TEST_RUNS runs), then answer in text. An error output is retried as the same
    call (up to MAX_RETRIES in a row). Without flaky errors a rollout makes exactly `explore + 5` calls."""

    fix: Repair
    seed: int = 0
    explore: int = 0
    batch: int = 1

    def decide(self, history: Iterable[InputItem], *, parallel: bool = True) -> Decision:
        state = _State(self)
        calls: dict[str, Call] = {}
        for item in history:
            if state.answer is not None:
                break
            if isinstance(item, FunctionCall):
                calls[item.call_id] = Call.of(item.name, **_arguments(item.arguments))
            elif isinstance(item, FunctionCallOutput) and item.call_id in calls:
                state.observe(calls[item.call_id], _output_text(item.output))
        if state.answer is not None:
            return state.answer
        if not state.queue:
            return "I have nothing left to try."
        count = self.batch if parallel and state.phase == "explore" else 1
        return state.queue[: max(1, count)]


def scripted_policy(metadata: Mapping[str, str] | None) -> CodingPolicy | None:
    """The policy a request's metadata asks for, or None (the sim engine then generates as usual)."""
    if not metadata or metadata.get(POLICY_KEY) != POLICY_NAME:
        return None
    try:
        fix = _Repair(
            metadata["loopwire_fix_path"], metadata["loopwire_fix_old"], metadata["loopwire_fix_new"]
        )
        seed = int(metadata.get("loopwire_seed", "0"))
        explore = max(0, int(metadata.get("loopwire_explore", "0")))
        batch = max(1, int(metadata.get("loopwire_batch", "1")))
    except (KeyError, ValueError):
        return None
    return CodingPolicy(fix, seed, explore, batch)


@dataclass(slots=True)
class _State:
    """The policy replayed over the conversation: what is still to do and what it has learned."""

    policy: CodingPolicy
    phase: str = "orient"
    queue: list[Call] = field(default_factory=list)
    errors: dict[Call, int] = field(default_factory=dict)
    test_runs: int = 0
    answer: str | None = None

    def __post_init__(self) -> None:
        self.queue = [Call.of("list_files", path=".")]

    def observe(self, call: Call, output: str) -> None:
        if call not in self.queue:
            return  # not a call this policy is waiting for
        if output.startswith(_ERROR):
            failures = self.errors.get(call, 0) + 1
            self.errors[call] = failures
            if failures < MAX_RETRIES:
                return  # still queued: the next decision retries it
            self.queue.remove(call)
            if self.phase in ("orient", "explore"):
                self._advance(call, "")
            else:
                self.answer = f"I could not finish: {call.name} kept failing ({output[len(_ERROR) :][:200]})."
            return
        self.errors.pop(call, None)
        self.queue.remove(call)
        self._advance(call, output)

    def _advance(self, call: Call, output: str) -> None:
        fix = self.policy.fix
        if self.phase == "orient":
            self.queue = _exploration(self.policy, _listed_files(output))
            self.phase = "explore"
            if not self.queue:
                self._run_tests()
        elif self.phase == "explore":
            if not self.queue:
                self._run_tests()
        elif self.phase == "test":
            self.test_runs += 1
            if output.startswith(_PASSED):
                ran = re.search(r"Ran \d+ tests?", output)
                summary = ran.group(0) if ran else "the tests ran"
                changed = (
                    f" in {fix.path}: `{fix.old.strip()}` became `{fix.new.strip()}`"
                    if self.test_runs > 1
                    else ""
                )
                self.answer = f"All tests pass ({summary}). Fixed the bug{changed}."
            elif self.test_runs >= MAX_TEST_RUNS:
                self.answer = f"The tests still fail after {self.test_runs} runs; giving up."
            else:
                self.queue, self.phase = [Call.of("read_file", path=fix.path)], "read"
        elif self.phase == "read":
            if fix.old in output:
                self.queue, self.phase = (
                    [Call.of("edit_file", path=fix.path, old=fix.old, new=fix.new)],
                    "edit",
                )
            elif fix.new in output:
                self._run_tests()  # already repaired: check again
            else:
                self.answer = f"I could not find the faulty line in {fix.path}."
        elif self.phase == "edit":
            self._run_tests()

    def _run_tests(self) -> None:
        self.queue, self.phase = [Call.of("run_tests", selector="")], "test"


def _exploration(policy: CodingPolicy, files: list[str]) -> list[Call]:
    """`policy.explore` seeded steps over the listed files: reads (half), greps, and directory listings."""
    rng = random.Random(f"loopwire-policy:{policy.seed}")
    if not files:
        files = [policy.fix.path]
    order = files[:]
    rng.shuffle(order)
    directories = sorted({path.rsplit("/", 1)[0] for path in files if "/" in path}) or ["."]
    stems = sorted({path.rsplit("/", 1)[-1][: -len(".py")] for path in files if path.endswith(".py")})
    patterns = ["def ", "class ", "^import |^from ", "raise ", "return ", "TODO", "def test_", *stems]
    steps: list[Call] = []
    reads = 0
    for _ in range(policy.explore):
        draw = rng.random()
        if draw < 0.5:
            steps.append(Call.of("read_file", path=order[reads % len(order)]))
            reads += 1
        elif draw < 0.85:
            steps.append(Call.of("grep", pattern=rng.choice(patterns), path=rng.choice([".", *directories])))
        else:
            steps.append(Call.of("list_files", path=rng.choice(directories)))
    return steps


def _listed_files(listing: str) -> list[str]:
    files = []
    for line in listing.splitlines():
        name = line.split("  (", 1)[0].strip()
        if name and not name.startswith("("):
            files.append(name)
    return files


def _arguments(text: str) -> dict[str, str]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(key): str(value) for key, value in parsed.items()}


def _output_text(output: object) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(getattr(part, "text", "")) for part in output)
    return ""
