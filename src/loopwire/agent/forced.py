"""The scripted policy on the client side, for models that cannot choose the calls themselves (a real
135M model): every turn forces `tool_choice` to the function the policy picks next, the agent runs the
policy's own arguments under the model's call_id, and the final turn (no call) asks for text with
`tool_choice: "none"` and the length of the policy's answer.

Owns the policy's view of the conversation (the model's calls with the policy's arguments) and the
request fields each turn sends; must not send anything or run tools. The model's own output stays in
the conversation as it came, so every transport carries the same history.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..engines.sim.coding_policy import Call, CodingPolicy
from ..protocol.items import FunctionCall, FunctionCallOutput, InputItem
from .fixture import FixSpec

CALLS_LABEL = "forced tool_choice, arguments replaced by the policy's"
"""How the tool calls of a client-side rollout come about, as the benchmark's output labels them."""
DEFAULT_CALL_TOKENS = 96
"""The cap on a forced call's tokens: SmolLM2-135M closes its calls to the agent's tools in 30-60."""
CHARS_PER_TOKEN = 4
"""The final answer's length in tokens is its length in characters over this (a fixed estimate: the
client has no tokenizer, and any deterministic rule keeps the rollouts equal across transports)."""


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """What the next request asks for: a forced call of `call` (None: the final text answer)."""

    call: Call | None
    tool_choice: str | dict[str, Any]
    max_output_tokens: int


@dataclass(slots=True)
class ForcedPolicy:
    """The policy replayed over its own view of the conversation (FunctionCall items carrying the policy's
    arguments under the model's call ids, and the outputs the tools gave)."""

    policy: CodingPolicy
    call_tokens: int = DEFAULT_CALL_TOKENS
    view: list[InputItem] = field(default_factory=list)

    @classmethod
    def of(
        cls, fix: FixSpec, *, seed: int, explore: int, call_tokens: int = DEFAULT_CALL_TOKENS
    ) -> ForcedPolicy:
        if call_tokens < 1:
            raise ValueError("call_tokens must be at least 1")
        return cls(CodingPolicy(fix, seed=seed, explore=explore, batch=1), call_tokens)

    def next_turn(self) -> TurnPlan:
        decision = self.policy.decide(self.view, parallel=False)
        if isinstance(decision, str):
            tokens = max(1, math.ceil(len(decision) / CHARS_PER_TOKEN))
            return TurnPlan(None, "none", tokens)
        call = decision[0]
        return TurnPlan(call, {"type": "function", "name": call.name}, self.call_tokens)

    def model_call(self, plan: TurnPlan, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The model's forced call in a turn's output; RuntimeError when it is missing or names another
        function (a call cut at max_output_tokens comes back as text)."""
        assert plan.call is not None
        calls = [item for item in output if item.get("type") == "function_call"]
        if len(calls) != 1 or calls[0].get("name") != plan.call.name:
            raise RuntimeError(
                f"expected one forced call of {plan.call.name}, got {json.dumps(output)[:300]} "
                f"(a call cut at max_output_tokens={plan.max_output_tokens} comes back as text: raise it)"
            )
        return calls[0]

    def observe(self, call_id: str, call: Call, output: str) -> None:
        """The tools ran the policy's `call`, answered under the model's `call_id`."""
        self.view.append(FunctionCall(call_id=call_id, name=call.name, arguments=call.arguments))
        self.view.append(FunctionCallOutput(call_id=call_id, output=output))
