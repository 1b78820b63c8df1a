"""The agent loop: send the conversation, run the returned function calls with the tools, repeat.

Owns one rollout over a `loopwire.client.Session` and its metrics; must not decide which calls to make.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ..client import Item, Session, SessionOptions, TransportName, TurnInterrupted, TurnMetrics
from ..engines.sim.coding_policy import policy_metadata
from .fixture import FixSpec
from .forced import DEFAULT_CALL_TOKENS, ForcedPolicy, TurnPlan
from .tools import TOOL_SCHEMAS, Toolbox, ToolSettings, repo_digest

INSTRUCTIONS = (
    "You are a coding agent working in a Python repository. Use the tools to find and fix the bug that "
    "makes the tests fail, run the tests until they pass, then say what you changed."
)
TASK = "The test suite of this repository fails. Find the bug, fix it, and make all tests pass."


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One rollout's settings. `explore` exploration steps make a rollout of explore + 5 tool calls
    (plus retries of flaky ones); `batch` > 1 lets the policy issue that many reads per turn."""

    base_url: str
    transport: TransportName = "ws"
    model: str = "sim"
    api_key: str | None = None
    store: bool | None = None
    explore: int = 10
    seed: int = 0
    batch: int = 1
    max_turns: int = 400
    tools: ToolSettings = field(default_factory=ToolSettings)
    session: SessionOptions | None = None
    """Client settings (timeouts, fallback, HTTP keep-alive, deflate); None: the client's defaults."""
    ws_url: str | None = None
    """Where the socket goes when it is not derived from base_url (e.g. through a link emulator)."""
    task_note: str = ""
    """Appended to the task message (a benchmark labels each rollout so that no two share a history)."""
    interrupted_retries: int = 3
    """Times a turn whose link dropped after output had arrived is asked again (the client never resends
    such a request itself; the conversation did not take the interrupted answer, so nothing is doubled)."""
    forced_calls: bool = False
    """The policy runs here, not in the sim engine: each turn forces tool_choice to its next function and
    the tools run its arguments (agent/forced.py), so a model that cannot choose calls still does the
    same rollout; greedy (temperature 0) so its tokens, and the history, are the same on every transport."""
    call_tokens: int = DEFAULT_CALL_TOKENS
    """forced_calls: max_output_tokens of a forced call."""


@dataclass(slots=True)
class TurnRecord:
    """One model turn: the client's metrics, the calls it asked for and the time the tools took."""

    number: int
    metrics: TurnMetrics
    tool_calls: int = 0
    tool_errors: int = 0
    tool_time_s: float = 0.0
    interrupted: int = 0
    """Attempts of this turn cut off after output had arrived, then asked again."""
    usage: dict[str, Any] = field(default_factory=dict)
    """The response's usage object (input, cached and output tokens)."""
    response_id: str = ""
    """The id of the response that answered this turn."""
    output: list[Item] = field(default_factory=list)
    """The turn's output items as the model produced them."""


class TurnObserver(Protocol):
    """Told around every model turn (not around tool calls), e.g. to read the server's CPU clock."""

    def turn_started(self, number: int) -> None: ...

    def turn_finished(self, record: TurnRecord) -> None: ...


@dataclass(slots=True)
class AgentRun:
    transport: str
    turns: list[TurnRecord]
    tool_calls: int
    tool_errors: int
    tool_time_s: float
    elapsed_s: float
    finished: bool
    """The model answered without tool calls (False: max_turns was reached)."""
    final_text: str
    repo_hash: str
    file_hashes: dict[str, str]
    conversation: list[Item]

    @property
    def turn_count(self) -> int:
        return len(self.turns)

    def summary(self) -> dict[str, Any]:
        """The totals as plain JSON-ready values."""
        return {
            "transport": self.transport,
            "turns": self.turn_count,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "tool_time_s": round(self.tool_time_s, 4),
            "elapsed_s": round(self.elapsed_s, 4),
            "model_time_s": round(sum(turn.metrics.latency_s for turn in self.turns), 4),
            "bytes_up": sum(turn.metrics.bytes_up for turn in self.turns),
            "bytes_down": sum(turn.metrics.bytes_down for turn in self.turns),
            "finished": self.finished,
            "repo_hash": self.repo_hash,
            "final_text": self.final_text,
        }


async def run_agent(
    repo: Path, fix: FixSpec, config: AgentConfig, observer: TurnObserver | None = None
) -> AgentRun:
    """Drive the model until it answers without tool calls (or max_turns), executing its calls on `repo`.

    `fix` reaches only the simulated model, through request metadata (a real model would ignore it)."""
    toolbox = Toolbox(repo, config.tools)
    forced = (
        ForcedPolicy.of(fix, seed=config.seed, explore=config.explore, call_tokens=config.call_tokens)
        if config.forced_calls
        else None
    )
    if forced is not None and config.batch != 1:
        raise ValueError("forced calls are one per turn: batch must be 1")
    metadata = policy_metadata(fix, seed=config.seed, explore=config.explore, batch=config.batch)
    task = f"{TASK} {config.task_note}" if config.task_note else TASK
    conversation: list[Item] = [{"type": "message", "role": "user", "content": task}]
    turns: list[TurnRecord] = []
    final_text = ""
    finished = False
    started = time.perf_counter()
    async with Session(
        config.base_url,
        config.transport,
        api_key=config.api_key,
        store=config.store,
        ws_url=config.ws_url,
        options=_options(config),
    ) as session:
        for number in range(1, config.max_turns + 1):
            if observer is not None:
                observer.turn_started(number)
            plan = forced.next_turn() if forced is not None else None
            interrupted = 0
            while True:
                try:
                    result = await session.run_turn(
                        conversation, model=config.model, **_request(config, plan, metadata)
                    )
                    break
                except TurnInterrupted:
                    interrupted += 1
                    if interrupted > config.interrupted_retries:
                        raise
            cut_answer = plan is not None and plan.call is None and result.status == "incomplete"
            if result.status != "completed" and not cut_answer:
                raise RuntimeError(f"turn {number} ended {result.status}: {result.response.get('error')}")
            usage = result.response.get("usage")
            record = TurnRecord(
                number,
                result.metrics,
                interrupted=interrupted,
                usage=usage if isinstance(usage, dict) else {},
                response_id=str(result.response.get("id", "")),
                output=list(result.output),
            )
            turns.append(record)
            if observer is not None:
                observer.turn_finished(record)
            conversation += result.output
            if forced is not None and plan is not None:
                if plan.call is None:
                    final_text, finished = result.output_text, True
                    break
                model_call = forced.model_call(plan, result.output)
                calls: list[Item] = [{**model_call, "arguments": plan.call.arguments}]
            else:
                calls = result.function_calls
                if not calls:
                    final_text, finished = result.output_text, True
                    break
            for call in calls:
                outcome = await asyncio.to_thread(
                    toolbox.call, str(call["name"]), str(call.get("arguments", ""))
                )
                record.tool_calls += 1
                record.tool_errors += 0 if outcome.ok else 1
                record.tool_time_s += outcome.seconds
                if forced is not None and plan is not None and plan.call is not None:
                    forced.observe(str(call["call_id"]), plan.call, outcome.output)
                conversation.append(
                    {"type": "function_call_output", "call_id": call["call_id"], "output": outcome.output}
                )
    repo_hash, file_hashes = repo_digest(repo)
    return AgentRun(
        transport=config.transport,
        turns=turns,
        tool_calls=sum(turn.tool_calls for turn in turns),
        tool_errors=sum(turn.tool_errors for turn in turns),
        tool_time_s=sum(turn.tool_time_s for turn in turns),
        elapsed_s=time.perf_counter() - started,
        finished=finished,
        final_text=final_text,
        repo_hash=repo_hash,
        file_hashes=file_hashes,
        conversation=conversation,
    )


PER_TURN_FIELDS = frozenset({"tool_choice", "max_output_tokens"})
"""What forced calls change every turn; the chain (previous_response_id) continues across them."""


def _options(config: AgentConfig) -> SessionOptions | None:
    if not config.forced_calls:
        return config.session
    return replace(config.session or SessionOptions(), per_turn_fields=PER_TURN_FIELDS)


def _request(config: AgentConfig, plan: TurnPlan | None, metadata: dict[str, str]) -> dict[str, Any]:
    """The request fields of one turn: the sim policy's metadata with tool_choice auto, or (forced calls)
    the plan's tool_choice and length, decoded greedily."""
    common: dict[str, Any] = {"instructions": INSTRUCTIONS, "tools": TOOL_SCHEMAS}
    if plan is None:
        return {
            **common,
            "tool_choice": "auto",
            "parallel_tool_calls": config.batch > 1,
            "extra": {"metadata": metadata},
        }
    return {
        **common,
        "tool_choice": plan.tool_choice,
        "parallel_tool_calls": False,
        "max_output_tokens": plan.max_output_tokens,
        "extra": {"temperature": 0},
    }
