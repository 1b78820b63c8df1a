"""Constrained decoding with xgrammar: a forced tool call (`tool_choice` naming a tool, or "required") and a
`text.format` JSON schema become a grammar over the model's vocabulary, applied as a mask on every token.

Owns the grammars (a Hermes `<tool_call>` block whose JSON is {"name": <tool>, "arguments": <its schema>};
the text schema; their union when the model may choose), their compile cache and the per-token mask; the
same choice as plain JSON schemas for an upstream that constrains its own decoding (token-id mode).
xgrammar was picked by measurement over llguidance and outlines-core (bench/constrained.py,
docs/benchmarks.md): the fastest compile of a tool-call schema on SmolLM2's vocabulary, ~µs masks.
Must not run the model, sample or parse the output.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..base import EngineError, EngineRequest, NamedToolChoice, ToolSpec
from ..common.tool_names import ChatToolNames
from .call_opening import CallOpenings
from .tool_parser import CLOSE

CALL_CLOSE = "\n" + CLOSE
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as error:
        raise EngineError(
            f"a forced tool_choice or a json_schema text format needs xgrammar ({error}); "
            "pip install 'loopwire[local]'"
        ) from None
    return xgrammar


def call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The JSON a Hermes tool call carries for a tool, given its chat `function` (flat name, parameters)."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or EMPTY_PARAMETERS,
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def forced_tools(request: EngineRequest) -> list[ToolSpec] | None:
    """The tools a forced `tool_choice` leaves the model (the named one, or all for "required"), else None."""
    choice = request.tool_choice
    if not request.tools:
        return None
    if isinstance(choice, NamedToolChoice):
        named = [tool for tool in request.tools if tool.name == choice.name and tool.kind == choice.kind]
        if not named:
            raise EngineError(f"tool_choice names {choice.name!r}, which is not among the tools")
        return named
    return list(request.tools) if choice == "required" else None


def calls_schema(tools: Sequence[ToolSpec], names: ChatToolNames) -> dict[str, Any]:
    """The JSON inside a `<tool_call>` block calling one of `tools`."""
    schemas = [call_schema(names.function(tool)) for tool in tools]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def text_schema(request: EngineRequest) -> dict[str, Any] | None:
    """The schema of a `json_schema` text format; `json_object` is any JSON object; else None."""
    fmt = request.text_format
    if not fmt:
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = fmt["schema"]
        return schema
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    return None


def _literal(xgr: Any, text: str) -> Any:
    """A grammar matching exactly `text` (a JSON string literal is a valid EBNF one)."""
    return xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text)}")


class Constraint:
    """One turn's grammar state: `mask` the logits before sampling, `accept` the sampled token."""

    def __init__(self, xgr: Any, compiled: Any, vocab_size: int) -> None:
        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: Any) -> Any:
        """The logits with every token the grammar forbids at -inf, on the logits' device (on a GPU only
        the packed bitmask, vocab/32 words, crosses to it)."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        scores = logits.float().unsqueeze(0)
        bitmask = self._bitmask if scores.device.type == "cpu" else self._bitmask.to(scores.device)
        self._xgr.apply_token_bitmask_inplace(scores, bitmask)
        return scores[0]

    def forced_tokens(self, limit: int) -> list[int]:
        """Up to `limit` tokens spelling the text the grammar forces next, whatever the model picks (a
        draft: the decoder feeds them in one forward pass and keeps each only where it would have picked
        it). Does not change the matcher."""
        if limit <= 0:
            return []
        return [int(token) for token in self._matcher.find_jump_forward_tokens()[:limit]]

    def accept(self, token: int) -> None:
        if not self._matcher.accept_token(token):
            raise EngineError(f"constrained decoding: the grammar refused token {token}")

    @property
    def finished(self) -> bool:
        return bool(self._matcher.is_terminated())


class Grammars:
    """One per engine: the tokenizer's vocabulary for xgrammar (built on first use) and compiled grammars
    cached by their source (a lane that forces the same tool every turn compiles it once)."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int], openings: CallOpenings
    ) -> None:
        self.tokenizer = tokenizer
        self.openings = openings
        self.vocab_size = vocab_size
        self.stop_ids = sorted(stop_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()

    def needed(self, request: EngineRequest) -> bool:
        forced = bool(request.tools) and request.tool_choice not in ("auto", "none")
        return forced or text_schema(request) is not None

    def for_request(self, request: EngineRequest) -> Constraint | None:
        if not request.generate or not self.needed(request):
            return None
        xgr = _xgrammar()
        compiler = self._get_compiler(xgr)
        grammar = self._grammar(xgr, request)
        try:
            compiled = compiler.compile_grammar(grammar)
        except (RuntimeError, ValueError) as error:
            raise EngineError(f"cannot compile the output grammar: {error}", code="invalid_request") from None
        return Constraint(xgr, compiled, self.vocab_size)

    def _get_compiler(self, xgr: Any) -> Any:
        with self._lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_ids
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def _grammar(self, xgr: Any, request: EngineRequest) -> Any:
        tools = request.tools
        names = ChatToolNames(tools)
        forced = forced_tools(request)
        if forced is not None:
            return self._call(xgr, forced, names, self.openings.text(tools))
        schema = text_schema(request)
        assert schema is not None
        text = self._json(xgr, schema, "the text format's schema")
        if tools and request.tool_choice == "auto":  # the model may answer in the schema or call a tool
            return xgr.Grammar.union(text, self._call(xgr, list(tools), names, self.openings.text(tools)))
        return text

    def _call(self, xgr: Any, tools: list[ToolSpec], names: ChatToolNames, opening: str) -> Any:
        """A `<tool_call>` block opened as the template writes it (call_opening), so the next turn's
        render of the call extends the ids the lane's KV holds."""
        body = self._json(xgr, calls_schema(tools, names), "the tool parameters")
        return xgr.Grammar.concat(_literal(xgr, opening), body, _literal(xgr, CALL_CLOSE))

    def _json(self, xgr: Any, schema: dict[str, Any], what: str) -> Any:
        try:
            return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
        except (RuntimeError, ValueError, TypeError) as error:
            raise EngineError(
                f"cannot build a grammar from {what}: {error}", code="invalid_request"
            ) from None
